package ninep_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

const (
	rootA       = storetest.RootBlobA
	rootB       = storetest.RootBlobB
	rootLinkA   = storetest.RootSymlinkA
	rootKeep    = storetest.RootWithKeep
	rootComplex = storetest.RootComplicated
)

// fixtureFS is vfs over the vectors.md fixtures in a memory store.
func fixtureFS(t testing.TB, opts vfs.Options) *vfs.FS {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(context.Background(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.Logger = testLog(t)
	fsys, err := vfs.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// session opens a raw connection, negotiates msize and attaches fid 1 to
// the root.
func session(t testing.TB, addr string, msize uint32) *rawConn {
	t.Helper()
	c := dialRaw(t, "tcp", addr)
	c.mustVersion(msize)
	if _, err := c.attach(1, "", "", 0); err != nil {
		t.Fatalf("attach: %v", err)
	}
	return c
}

// stillServes checks that a fresh client can read a file: other clients
// are served whatever one connection did.
func stillServes(t *testing.T, addr string) {
	t.Helper()
	c := dialP9(t, "tcp", addr, 1<<16)
	defer c.Close()
	b, err := c.ReadFile(rootA)
	if err != nil || !bytes.Equal(b, storetest.BlobA) {
		t.Fatalf("another client reads %s: %x, %v", rootA, b, err)
	}
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// TestKernelAttaches sends what Linux v9fs sends at mount and on first
// access: two attaches, as 'nobody' with n_uname NoUID and as ” with uid
// 0. Both succeed at the root (qid.path 1, a directory).
func TestKernelAttaches(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	c := dialRaw(t, "tcp", addr)
	if got := c.mustVersion(1 << 20); got != 1<<20 {
		t.Errorf("msize %d, want 1 MiB", got)
	}
	for fid, a := range []struct {
		uname string
		uid   uint32
	}{{"nobody", noFid}, {"", 0}, {"root", 0}} {
		q, err := c.attach(uint32(fid), a.uname, "", a.uid)
		if err != nil {
			t.Fatalf("attach %q uid %d: %v", a.uname, a.uid, err)
		}
		if q.path != vfs.RootIno || q.typ != 0x80 || q.version != 0 {
			t.Errorf("attach %q: qid %+v, want root directory path 1 version 0", a.uname, q)
		}
	}
	for _, aname := range []string{"/", rootComplex, "/" + rootComplex + "/keep"} {
		if _, err := c.attach(10, "nobody", aname, noFid); err != nil {
			t.Errorf("attach aname %q: %v", aname, err)
		}
		if _, err := c.walk(10, 11); err != nil {
			t.Errorf("clone of aname %q: %v", aname, err)
		}
	}
	// The subtree attach walks from the selected directory.
	if _, err := c.attach(12, "", rootComplex+"/keep", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.walk(12, 13, ".keep"); err != nil {
		t.Errorf("walk .keep in aname %s/keep: %v", rootComplex, err)
	}
	for _, aname := range []string{"77777777777777777777777777777777-test", rootComplex + "/nothere"} {
		_, err := c.attach(14, "", aname, 0)
		wantErrno(t, "attach "+aname, err, syscall.ENOENT)
	}
	_, err := c.attach(14, "", "../etc", 0)
	if err == nil {
		t.Error("attach ../etc succeeded")
	}
}

// TestVersion: only plain 9P2000.L, msize clamped to Options.MaxMsize.
func TestVersion(t *testing.T) {
	fsys := fixtureFS(t, vfs.Options{})
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := dialRaw(t, "tcp", addr)
	for _, v := range []string{"9P2000", "9P2000.u", "9P2000.L.Google.7", "9P2000.L.x", ""} {
		m, got, err := c.version(1<<20, v)
		if err != nil || got != "unknown" {
			t.Errorf("Tversion %q: %q (msize %d), %v; want Rversion unknown", v, got, m, err)
		}
	}
	if _, got, err := c.version(1024, "9P2000.L"); err != nil || got != "unknown" {
		t.Errorf("Tversion msize 1024: %q, %v; want unknown", got, err)
	}
	if got := c.mustVersion(16 << 20); got != ninep.DefaultMaxMsize {
		t.Errorf("msize 16 MiB granted %d, want %d", got, ninep.DefaultMaxMsize)
	}
	// A second Tversion ends the session.
	c.send(frame(tversion, noTag, msg{}.u32(8192).str("9P2000.L")))
	if !c.isClosed() {
		t.Error("second Tversion: connection still open")
	}

	_, addr64 := startServer(t, fsys, "tcp", ninep.Options{MaxMsize: 65536})
	c = dialRaw(t, "tcp", addr64)
	if got := c.mustVersion(1 << 20); got != 65536 {
		t.Errorf("MaxMsize 64 KiB: granted %d", got)
	}
	// Requests before Tversion end the connection.
	c = dialRaw(t, "tcp", addr)
	c.send(frame(tattach, 1, msg{}.u32(1).u32(noFid).str("").str("").u32(0)))
	if !c.isClosed() {
		t.Error("Tattach before Tversion: connection still open")
	}
}

// deepTree imports a directory holding 300 small files, a 3 MiB file, an
// executable, a symlink and 17 nested directories into a memory store.
func deepTree(t testing.TB) (*vfs.FS, string, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tree")
	deep := src
	for i := range 17 {
		deep = filepath.Join(deep, fmt.Sprintf("d%d", i))
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"deep.txt": "bottom", "../hello.txt": "hello\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(deep, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i*7/3 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("run.sh", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%03d-%s", i, strings.Repeat("x", i%40))), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	pi, err := importer.ImportPath(context.Background(), s, src, importer.Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	return fsys, pi.StorePath.Basename(), src
}

// TestWalk: up to 16 names per Twalk, walking from an open fid, unknown
// fids.
func TestWalk(t *testing.T) {
	fsys, root, _ := deepTree(t)
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := session(t, addr, 1<<20)
	names := []string{root}
	for i := range 15 {
		names = append(names, fmt.Sprintf("d%d", i))
	}
	qs, err := c.walk(1, 2, names...)
	if err != nil || len(qs) != 16 {
		t.Fatalf("walk of 16 names: %d qids, %v", len(qs), err)
	}
	_, err = c.walk(1, 3, append(names, "d15")...)
	wantErrno(t, "walk of 17 names", err, syscall.EINVAL)
	// p9's Twalkgetattr has Twalk's limit.
	if err := c.walkgetattr(1, 3, names...); err != nil {
		t.Fatalf("Twalkgetattr of 16 names: %v", err)
	}
	wantErrno(t, "Twalkgetattr of 17 names", c.walkgetattr(1, 4, append(names, "d15")...), syscall.EINVAL)
	c.clunk(3)
	// Walk on from the 16th directory, then from an open fid.
	if _, err := c.walk(2, 3, "d15", "d16", "deep.txt"); err != nil {
		t.Fatalf("walk on: %v", err)
	}
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatalf("open directory: %v", err)
	}
	if qs, err := c.walk(2, 4, "d15"); err != nil || len(qs) != 1 || qs[0].typ != 0x80 {
		t.Errorf("walk from an open fid: %v, %v", qs, err)
	}
	// Qids are inode numbers: the same node has the same qid.path on a
	// second walk and through a clone.
	q1, _ := c.walk(1, 5, root, "run.sh")
	q2, _ := c.walk(1, 6, root, "run.sh")
	if len(q1) != 2 || len(q2) != 2 || q1[1] != q2[1] || q1[1].typ != 0 {
		t.Errorf("qids of run.sh: %v and %v", q1, q2)
	}
	if q, _ := c.walk(1, 7, root, "link"); len(q) != 2 || q[1].typ != 0x02 {
		t.Errorf("qid of a symlink: %v", q)
	}
	_, err = c.walk(999, 8, root)
	wantErrno(t, "walk from an unknown fid", err, syscall.EBADF)
	_, err = c.walk(1, 8, root, "nothere")
	wantErrno(t, "walk to a missing name", err, syscall.ENOENT)
	_, err = c.walk(1, 8, strings.Repeat("a", 300))
	wantErrno(t, "walk to an overlong name", err, syscall.ENAMETOOLONG)
	if err := c.clunk(999); !errors.Is(err, syscall.EBADF) {
		t.Errorf("clunk of an unknown fid: %v", err)
	}
}

// TestReaddir: DT_* types, "." and "..", and offsets that resume exactly
// whatever the count.
func TestReaddir(t *testing.T) {
	fsys, root, src := deepTree(t)
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := session(t, addr, 1<<20)
	if _, err := c.walk(1, 2, root); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", ".."}
	for _, e := range ents {
		want = append(want, e.Name())
	}
	slices.Sort(want[2:])
	types := map[string]uint8{".": 4, "..": 4, "d0": 4, "run.sh": 8, "link": 10, "f000-": 8}
	for _, count := range []uint32{1<<20 - 24, 4096, 300, 70} {
		var got []string
		var off uint64
		for {
			es, n, err := c.readdir(2, off, count)
			if err != nil {
				t.Fatalf("count %d: readdir at %d: %v", count, off, err)
			}
			if uint32(n) > count {
				t.Fatalf("count %d: %d bytes", count, n)
			}
			if len(es) == 0 {
				break
			}
			for _, e := range es {
				if wt, ok := types[e.name]; ok && e.typ != wt {
					t.Errorf("%s: dirent type %d, want %d", e.name, e.typ, wt)
				}
				got = append(got, e.name)
				off = e.offset
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("count %d: listed %d names, want %d (first difference at %d)", count, len(got), len(want), firstDiff(got, want))
		}
	}
	// Every offset resumes right after its entry.
	all, _, _ := c.readdir(2, 0, 1<<20-24)
	for i, e := range all[:len(all)-1] {
		next, _, err := c.readdir(2, e.offset, 100)
		if err != nil || len(next) == 0 || next[0].name != all[i+1].name {
			t.Fatalf("resume after %s (offset %d): %v, %v; want %s", e.name, e.offset, next, err, all[i+1].name)
		}
	}
	_, _, err = c.readdir(2, 0, 10)
	wantErrno(t, "Treaddir count smaller than one entry", err, syscall.EINVAL)
	_, _, err = c.readdir(1, 0, 4096)
	wantErrno(t, "Treaddir of an unopened fid", err, syscall.EINVAL)
}

// TestRead: any count up to msize-11 is served whole; larger counts are
// clamped, not refused; reads past the end return 0 bytes.
func TestRead(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	for _, msize := range []uint32{8192, 65536, 1 << 20} {
		c := session(t, addr, msize)
		if _, err := c.walk(1, 2, rootB); err != nil {
			t.Fatal(err)
		}
		if _, iounit, err := c.lopen(2, 0); err != nil || iounit != 0 {
			t.Fatalf("open: iounit %d, %v; want 0", iounit, err)
		}
		for _, count := range []uint32{0, 1, 4096, msize - 11, msize, msize + 100, 16 << 20} {
			b, err := c.read(2, 1000, count)
			if err != nil {
				t.Errorf("msize %d: read %d bytes: %v", msize, count, err)
				continue
			}
			want := storetest.BlobB[1000:][:min(count, msize-11, uint32(len(storetest.BlobB)-1000))]
			if !bytes.Equal(b, want) {
				t.Errorf("msize %d: read %d bytes: got %d, want %d", msize, count, len(b), len(want))
			}
		}
		for _, off := range []uint64{uint64(len(storetest.BlobB)), 1 << 40, 1<<63 - 1} {
			if b, err := c.read(2, off, 100); err != nil || len(b) != 0 {
				t.Errorf("read at %d: %d bytes, %v", off, len(b), err)
			}
		}
		_, err := c.read(1, 0, 10)
		wantErrno(t, "read of an unopened fid", err, syscall.EINVAL)
		if _, err := c.walk(1, 3, rootKeep); err != nil {
			t.Fatal(err)
		}
		c.lopen(3, 0)
		_, err = c.read(3, 0, 10)
		wantErrno(t, "read of a directory", err, syscall.EISDIR)
	}
}

// TestXattrs: the digest attributes with Linux's Txattrwalk + Tread, and
// ENODATA for names a node does not have.
func TestXattrs(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	c := session(t, addr, 1<<16)
	c.walk(1, 2, rootA)
	c.walk(1, 3, rootKeep)
	c.walk(1, 4, rootLinkA)
	v, err := c.xattr(2, 10, vfs.XattrBlobDigest)
	if err != nil || string(v) != "blake3-e3AVu5LPCzGAN3AqbN2B3uQSJPc0aEwsEizWNZyx7mM=" {
		t.Errorf("blob digest: %q, %v", v, err)
	}
	list, err := c.xattr(3, 10, "")
	if err != nil || string(list) != vfs.XattrDirectoryDigest+"\x00" {
		t.Errorf("list on a directory: %q, %v", list, err)
	}
	for fid, what := range map[uint32]string{1: "root", 4: "symlink"} {
		list, err := c.xattr(fid, 10, "")
		if err != nil || len(list) != 0 {
			t.Errorf("list on the %s: %q, %v; want empty", what, list, err)
		}
	}
	for _, x := range []struct {
		fid  uint32
		name string
	}{{2, "user.other"}, {3, vfs.XattrBlobDigest}, {1, vfs.XattrDirectoryDigest}, {4, vfs.XattrBlobDigest}} {
		_, err := c.xattr(x.fid, 10, x.name)
		wantErrno(t, fmt.Sprintf("getxattr %s on fid %d", x.name, x.fid), err, syscall.ENODATA)
	}
	// The file is still usable after its xattr fids were clunked (p9
	// closes the File each xattr fid shares).
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatal(err)
	}
	c.xattr(2, 10, vfs.XattrBlobDigest)
	if b, err := c.read(2, 0, 10); err != nil || !bytes.Equal(b, storetest.BlobA) {
		t.Errorf("read after an xattr fid was clunked: %x, %v", b, err)
	}
	_, err = c.call(txattrcrt, msg{}.u32(2).str("user.x").u64(1).u32(0))
	wantErrno(t, "Txattrcreate", err, syscall.EROFS)
}

// TestWritesRefused: every write-type request is Rlerror EROFS.
func TestWritesRefused(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	c := session(t, addr, 1<<16)
	c.walk(1, 2, rootComplex)
	c.walk(1, 3, rootA)
	for _, r := range []struct {
		name string
		typ  uint8
		body msg
	}{
		{"Tlcreate", tlcreate, msg{}.u32(2).str("new").u32(0o2).u32(0o644).u32(0)},
		{"Tlcreate at the root", tlcreate, msg{}.u32(1).str("new").u32(0o2).u32(0o644).u32(0)},
		{"Tmkdir", tmkdir, msg{}.u32(2).str("newdir").u32(0o755).u32(0)},
		{"Tunlinkat", tunlinkat, msg{}.u32(2).str(".keep").u32(0)},
		{"Tsetattr", tsetattr, msg{}.u32(3).u32(1).u32(0o777).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0)},
		{"Twrite", twrite, msg{}.u32(3).u64(0).u32(1).u8(9)},
		{"Tlopen for writing", tlopen, msg{}.u32(3).u32(1)},
		{"Tlopen with O_TRUNC", tlopen, msg{}.u32(3).u32(0o1000)},
		{"Tremove", tremove, msg{}.u32(3)},
		{"Tremove of the root", tremove, msg{}.u32(1)},
	} {
		_, err := c.call(r.typ, r.body)
		wantErrno(t, r.name, err, syscall.EROFS)
	}
	// Tremove clunks its fid even when it fails.
	_, err := c.walk(3, 9)
	wantErrno(t, "walk from a removed fid", err, syscall.EBADF)
	if b, err := c.xattr(2, 10, vfs.XattrDirectoryDigest); err != nil || len(b) == 0 {
		t.Errorf("after refused writes: %q, %v", b, err)
	}
}

// TestStatfsFlush: Tstatfs answers; Tflush of a finished tag answers.
func TestStatfsFlush(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	c := session(t, addr, 1<<16)
	r, err := c.call(tstatfs, msg{}.u32(1))
	if err != nil {
		t.Fatal(err)
	}
	typ, bsize := r.u32(), r.u32()
	r.u64()
	r.u64()
	r.u64()
	r.u64()
	r.u64()
	r.u64()
	if namelen := r.u32(); typ != 0x01021997 || bsize == 0 || namelen != 255 {
		t.Errorf("statfs: type %#x bsize %d namelen %d", typ, bsize, namelen)
	}
	if _, err := c.call(tflush, msg{}.u16(1234)); err != nil {
		t.Errorf("Tflush: %v", err)
	}
	_, err = c.call(tauth, msg{}.u32(5).str("nobody").str("").u32(noFid))
	wantErrno(t, "Tauth (no authentication required, as diod says it)", err, syscall.ENOENT)
}

// TestHostile: garbage, truncated and oversized messages, unknown and
// reused fids and 10 000 fids end or fail their own requests or
// connection; the server keeps serving another client.
func TestHostile(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{})
	other := dialP9(t, "tcp", addr, 1<<16)
	check := func() {
		t.Helper()
		if b, err := other.ReadFile(rootA); err != nil || !bytes.Equal(b, storetest.BlobA) {
			t.Fatalf("the other client reads %x, %v", b, err)
		}
	}
	closes := map[string][]byte{
		"garbage":                    []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"size smaller than a header": {3, 0, 0, 0, 100, 0, 0},
		"size larger than msize":     append(binary32(100<<20), 110, 1, 0), // a header announcing 100 MiB
		"truncated Tversion":         frame(tversion, noTag, msg{}.u32(8192).u16(40).str("9P")),
		"zeros":                      make([]byte, 64),
	}
	for name, b := range closes {
		c := dialRaw(t, "tcp", addr)
		c.send(b)
		if !c.isClosed() {
			t.Errorf("%s: connection still open", name)
		}
		check()
	}
	// After Tversion: malformed bodies, truncated messages, duplicate
	// tags.
	for name, b := range map[string][]byte{
		"Twalk with a short body":      frame(twalk, 1, msg{}.u32(1)),
		"Tattach with a short body":    frame(tattach, 1, msg{}.u32(1).u32(noFid).u16(100)),
		"Tgetattr with a short body":   frame(tgetattr, 1, msg{}.u16(1)),
		"message larger than msize":    append(binary32(1<<20), 110, 1, 0),
		"Twalk with too many names":    frame(twalk, 1, msg{}.u32(1).u32(2).u16(2).str("a")),
		"unknown type, then truncated": append(frame(250, 1, msg{}.u32(7)), 50, 0, 0, 0, 24, 1, 0),
	} {
		c := session(t, addr, 8192)
		c.send(b)
		c.conn.(*net.TCPConn).CloseWrite()
		c.isClosed()
		check()
		_ = name
	}
	// A Tread of 1 MiB left unread: the client goes away mid-reply.
	c := session(t, addr, 1<<20)
	c.walk(1, 2, rootB)
	c.lopen(2, 0)
	for range 8 {
		c.send(frame(tread, 7, msg{}.u32(2).u64(0).u32(1<<20-11)))
	}
	c.conn.Close()
	check()

	// Unknown and reused fids fail the request only.
	c = session(t, addr, 8192)
	_, err := c.walk(77, 78)
	wantErrno(t, "unknown fid", err, syscall.EBADF)
	if _, err := c.attach(1, "", rootComplex, 0); err != nil { // reuses fid 1
		t.Errorf("attach on a used fid: %v", err)
	}
	if _, _, _, err := c.getattr(1); err != nil {
		t.Errorf("getattr of the replaced fid: %v", err)
	}
	_, err = c.call(tgetattr, msg{}.u32(12345).u64(0x3fff))
	wantErrno(t, "getattr of an unknown fid", err, syscall.EBADF)

	// 10 000 fids on one connection.
	c = session(t, addr, 8192)
	for i := range 10000 {
		if _, err := c.walk(1, uint32(100+i), rootComplex, "keep"); err != nil {
			t.Fatalf("fid %d: %v", i, err)
		}
	}
	check()
	for i := range 10000 {
		if err := c.clunk(uint32(100 + i)); err != nil {
			t.Fatalf("clunk fid %d: %v", i, err)
		}
	}
	check()
}

func binary32(v uint32) []byte { return msg{}.u32(v) }

// TestLimits: MaxFids answers EMFILE and recovers after clunks.
func TestLimits(t *testing.T) {
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{MaxFids: 100})
	c := session(t, addr, 8192) // fid 1
	for i := range 99 {
		if _, err := c.walk(1, uint32(10+i), rootKeep); err != nil {
			t.Fatalf("fid %d: %v", i, err)
		}
	}
	_, err := c.walk(1, 500, rootKeep)
	wantErrno(t, "fid 101", err, syscall.EMFILE)
	_, err = c.call(txattrwalk, msg{}.u32(1).u32(501).str(""))
	wantErrno(t, "xattr fid 101", err, syscall.EMFILE)
	for fid := range uint32(50) { // p9's Twalkgetattr makes fids too
		wantErrno(t, "Twalkgetattr fid 101", c.walkgetattr(1, 600+fid), syscall.EMFILE)
	}
	if err := c.walkgetattr(1, 11, rootA); err != nil {
		t.Errorf("Twalkgetattr to a used fid at the limit: %v", err)
	}
	if _, err := c.walk(1, 10, rootA); err != nil { // replacing a fid is fine
		t.Errorf("walk to a used fid at the limit: %v", err)
	}
	c.clunk(10)
	if _, err := c.walk(1, 500, rootKeep); err != nil {
		t.Errorf("after a clunk: %v", err)
	}
}

// TestShutdown: Close and a done context close open connections and Serve
// returns; goleak in TestMain checks that nothing is left.
func TestShutdown(t *testing.T) {
	fsys := fixtureFS(t, vfs.Options{})
	srv, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := session(t, addr, 8192)
	c.walk(1, 2, rootB)
	c.lopen(2, 0)
	srv.Close()
	if !c.isClosed() {
		t.Error("connection open after Close")
	}

	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ninep.Serve(ctx, lis, fsys, ninep.Options{Logger: testLog(t)}) }()
	c = session(t, lis.Addr().String(), 8192)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if !c.isClosed() {
		t.Error("connection open after the context was cancelled")
	}
}

// TestUnixSocket serves over a unix socket.
func TestUnixSocket(t *testing.T) {
	_, path := startServer(t, fixtureFS(t, vfs.Options{}), "unix", ninep.Options{})
	c := dialP9(t, "unix", path, 1<<20)
	if b, err := c.ReadFile(rootB); err != nil || !bytes.Equal(b, storetest.BlobB) {
		t.Errorf("read over a unix socket: %d bytes, %v", len(b), err)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestBoundedDecoding: what a client sends is checked before anything is
// allocated from its counts or lengths: replies sent as requests (whose p9
// decoders size arrays from a count), unknown types, overlong Tattach
// strings, writes of msize bytes, long version strings in the log.
func TestBoundedDecoding(t *testing.T) {
	var logs logBuffer
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", ninep.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := dialRaw(t, "tcp", addr)
	long := strings.Repeat("v", 400)
	if _, v, err := c.version(8192, long); err != nil || v != "unknown" {
		t.Fatalf("Tversion %d bytes: %q, %v", len(long), v, err)
	}
	if strings.Contains(logs.String(), long[:200]) {
		t.Error("a 400-byte version string logged whole")
	}
	c.mustVersion(1 << 20)
	if _, err := c.attach(1, "", "", 0); err != nil {
		t.Fatal(err)
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	rwalk := frame(111, 1, msg{}.u16(0xFFFF))           // an Rwalk announcing 65 535 qids
	rgetattr := frame(127, 2, msg{}.u16(0xFFFF).u32(0)) // Rwalkgetattr, the same
	var wrong error
	for range 300 {
		if err := c.send(append(rwalk, rgetattr...)); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			typ, _, body, err := c.recv()
			if err != nil {
				t.Fatal(err)
			}
			if typ != rlerror || syscall.Errno(binary.LittleEndian.Uint32(body)) != syscall.ENOSYS {
				wrong = fmt.Errorf("reply to a reply: type %d %x; want Rlerror ENOSYS", typ, body)
			}
		}
	}
	runtime.ReadMemStats(&ms)
	if grew := ms.TotalAlloc - before; grew > 64<<20 {
		t.Errorf("600 replies sent as requests allocated %d MiB", grew>>20)
	}
	if wrong != nil {
		t.Error(wrong)
	}

	for _, typ := range []uint8{250, 54, 6} { // unknown, Tgetlock, Tlerror: p9 answers EIO
		_, err := c.call(typ, msg{}.u32(1))
		wantErrno(t, fmt.Sprintf("type %d", typ), err, syscall.EIO)
	}
	for _, a := range []struct{ uname, aname string }{{strings.Repeat("u", 5000), ""}, {"", strings.Repeat("a/", 2500)}} {
		_, err := c.attach(5, a.uname, a.aname, 0)
		wantErrno(t, fmt.Sprintf("Tattach uname of %d, aname of %d bytes", len(a.uname), len(a.aname)), err, syscall.ENAMETOOLONG)
	}
	if _, err := c.walk(1, 2, rootA); err != nil {
		t.Fatal(err)
	}
	_, err := c.call(twrite, msg{}.u32(2).u64(0).u32(1<<20-23).append(make([]byte, 1<<20-23)))
	wantErrno(t, "Twrite of msize bytes", err, syscall.EROFS)
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Errorf("after the hostile requests: %v", err)
	}
}

// TestWalkDots: "." stays where it is, ".." goes to the parent on the fid's
// walk path (also across Twalks and clones), and neither ever goes above
// the attach root, the store root or an aname's subtree.
func TestWalkDots(t *testing.T) {
	fsys, root, _ := deepTree(t)
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := session(t, addr, 1<<20) // fid 1: the store root
	rootQ, _, _, err := c.getattr(1)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := c.walk(1, 2, root, "d0", "d1")
	if err != nil || len(qs) != 3 {
		t.Fatalf("walk root/d0/d1: %v, %v", qs, err)
	}
	top, d0, d1 := qs[0], qs[1], qs[2]
	for _, tc := range []struct {
		name  string
		from  uint32
		names []string
		want  qid
	}{
		{"d1/..", 2, []string{".."}, d0},
		{"d1/../..", 2, []string{"..", ".."}, top},
		{"d1/.", 2, []string{"."}, d1},
		{"d1/./../d1", 2, []string{".", "..", "d1"}, d1},
		{"above the store root", 1, []string{"..", "..", root}, top},
		{"store root/.", 1, []string{"."}, rootQ},
		{"down and up", 1, []string{root, "d0", "..", "..", root}, top},
	} {
		qs, err := c.walk(tc.from, 10, tc.names...)
		if err != nil || len(qs) != len(tc.names) || qs[len(qs)-1] != tc.want {
			t.Errorf("%s: %v, %v; want last %v", tc.name, qs, err, tc.want)
		}
		c.clunk(10)
	}
	// A clone keeps the walk path; a fid walked from another goes on up
	// through the other's path, even after that fid is clunked.
	if _, err := c.walk(2, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.walk(3, 4, "d2"); err != nil {
		t.Fatal(err)
	}
	c.clunk(2)
	c.clunk(3)
	if qs, err := c.walk(4, 5, "..", "..", ".."); err != nil || len(qs) != 3 || qs[0] != d1 || qs[1] != d0 || qs[2] != top {
		t.Errorf("d2/../../..: %v, %v; want %v %v %v", qs, err, d1, d0, top)
	}
	// An aname's subtree is the top: ".." from it stays.
	if _, err := c.attach(20, "", root+"/d0", 0); err != nil {
		t.Fatal(err)
	}
	if qs, err := c.walk(20, 21, "..", "..", "d1"); err != nil || len(qs) != 3 || qs[0] != d0 || qs[2] != d1 {
		t.Errorf("attach root/d0, walk ../../d1: %v, %v", qs, err)
	}
	// "." and ".." of a file are ENOTDIR, as any name in it.
	if _, err := c.walk(1, 30, root, "run.sh"); err != nil {
		t.Fatal(err)
	}
	_, err = c.walk(30, 31, "..")
	wantErrno(t, "walk .. from a file", err, syscall.ENOTDIR)
}

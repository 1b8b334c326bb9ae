package vfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func fixtures(t testing.TB) *memory.Store {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(context.Background(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

func newFS(t testing.TB, s storeclient.Store, opts vfs.Options) *vfs.FS {
	t.Helper()
	fsys, err := vfs.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func walk(t *testing.T, fsys *vfs.FS, p string) vfs.Node {
	t.Helper()
	n, err := fsys.Walk(t.Context(), p, false)
	if err != nil {
		t.Fatalf("walk %q: %v", p, err)
	}
	return n
}

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"read-only", vfs.ErrReadOnly, syscall.EROFS},
		{"read-only op", vfs.ReadOnly("mkdir", "x"), syscall.EROFS},
		{"wrapped", errors.Join(errors.New("x"), vfs.ReadOnly("rename", "y")), syscall.EROFS},
		{"errno", &fs.PathError{Op: "stat", Path: "p", Err: syscall.ENOENT}, syscall.ENOENT},
		{"other", errors.New("backend down"), syscall.EIO},
		{"deadline", context.DeadlineExceeded, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := vfs.Errno(tc.err); got != tc.want {
				t.Errorf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if !errors.Is(vfs.ReadOnly("mkdir", "x"), vfs.ErrReadOnly) {
		t.Error("ReadOnly does not match ErrReadOnly")
	}
}

func TestLookupErrors(t *testing.T) {
	fsys := newFS(t, fixtures(t), vfs.Options{})
	dir := walk(t, fsys, storetest.RootComplicated)
	for _, tc := range []struct {
		dir  vfs.Node
		name string
		want syscall.Errno
	}{
		{dir, "", syscall.ENOENT},
		{dir, ".", syscall.ENOENT},
		{dir, "..", syscall.ENOENT},
		{dir, "a/b", syscall.ENOENT},
		{dir, "a\x00", syscall.ENOENT},
		{dir, strings.Repeat("x", 256), syscall.ENAMETOOLONG},
		{fsys.Root(), strings.Repeat("x", 256), syscall.ENAMETOOLONG},
		{walk(t, fsys, storetest.RootBlobA), "x", syscall.ENOTDIR},
		{vfs.Node{}, "x", syscall.EINVAL},
	} {
		_, err := fsys.Lookup(t.Context(), tc.dir, tc.name)
		if got := vfs.Errno(err); got != tc.want {
			t.Errorf("Lookup(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// Every node's handle resolves, on a second FS, to a node with the same
// attributes and handle.
func TestHandleRoundTrip(t *testing.T) {
	s := fixtures(t)
	a, b := newFS(t, s, vfs.Options{}), newFS(t, s, vfs.Options{})
	for _, p := range []string{"", storetest.RootBlobA, storetest.RootSymlinkA, storetest.RootComplicated,
		storetest.RootComplicated + "/keep", storetest.RootComplicated + "/.keep", storetest.RootComplicated + "/aa",
		storetest.RootHelloExec} {
		n := walk(t, a, p)
		h := n.Handle()
		if len(h) == 0 || len(h) > vfs.MaxHandleLen {
			t.Errorf("%q: handle of %d bytes", p, len(h))
		}
		m, err := b.ResolveHandle(t.Context(), h)
		if err != nil {
			t.Errorf("%q: resolve: %v", p, err)
			continue
		}
		if a.Attr(n) != b.Attr(m) || !bytes.Equal(m.Handle(), h) {
			t.Errorf("%q: resolves to %+v, want %+v", p, b.Attr(m), a.Attr(n))
		}
	}
}

func TestXattrBuffers(t *testing.T) {
	fsys := newFS(t, fixtures(t), vfs.Options{})
	n := walk(t, fsys, storetest.RootBlobA)
	size, err := fsys.Getxattr(n, vfs.XattrBlobDigest, nil)
	if err != nil || size != len("blake3-e3AVu5LPCzGAN3AqbN2B3uQSJPc0aEwsEizWNZyx7mM=") {
		t.Fatalf("size query: %d, %v", size, err)
	}
	if _, err := fsys.Getxattr(n, vfs.XattrBlobDigest, make([]byte, size-1)); vfs.Errno(err) != syscall.ERANGE {
		t.Errorf("short buffer: %v, want ERANGE", err)
	}
	buf := make([]byte, 128)
	k, err := fsys.Listxattr(n, buf)
	if err != nil || string(buf[:k]) != vfs.XattrBlobDigest+"\x00" {
		t.Errorf("listxattr = %q, %v", buf[:k], err)
	}
	off := newFS(t, fixtures(t), vfs.Options{NoXAttrs: true})
	if _, err := off.Getxattr(walk(t, off, storetest.RootBlobA), vfs.XattrBlobDigest, nil); vfs.Errno(err) != syscall.ENODATA {
		t.Errorf("xattrs off: %v, want ENODATA", err)
	}
}

func TestInodes(t *testing.T) {
	fsys := newFS(t, fixtures(t), vfs.Options{UID: 7, GID: 8})
	if a := fsys.Attr(fsys.Root()); a.Ino != 1 || a.UID != 7 || a.GID != 8 {
		t.Errorf("root attr %+v", a)
	}
	seen := map[uint64]string{}
	for _, p := range []string{storetest.RootBlobA, storetest.RootBlobB, storetest.RootHelloExec, storetest.RootSymlinkA,
		storetest.RootSymlinkOut, storetest.RootWithKeep, storetest.RootComplicated, storetest.RootComplicated + "/.keep"} {
		ino := fsys.Attr(walk(t, fsys, p)).Ino
		if ino <= 1 {
			t.Errorf("%s: inode %d", p, ino)
		}
		if q, dup := seen[ino]; dup {
			t.Errorf("%s and %s share inode %d", p, q, ino)
		}
		seen[ino] = p
	}
}

// A root listing resumed after names were added neither drops nor repeats
// a name that was there when the listing began.
func TestRootListingGrows(t *testing.T) {
	s := memory.New()
	defer s.Close()
	node := storeclient.FileNode(storeclient.EmptyDigest, 0, false)
	put := func(name string) {
		p, err := storetest.PathInfoFor(name, node)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	var initial []string
	for _, c := range "02468acgikmp" {
		name := strings.Repeat(string(c), 32) + "-x"
		initial = append(initial, name)
		put(name)
	}
	fsys := newFS(t, s, vfs.Options{ListRoot: true})
	var got []string
	var cookie uint64
	for i := 0; ; i++ {
		es, err := fsys.ReadDir(t.Context(), fsys.Root(), cookie, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			got = append(got, e.Name)
			if e.Cookie <= cookie {
				t.Fatalf("cookie %d after %d", e.Cookie, cookie)
			}
			cookie = e.Cookie
		}
		// Add names before, between and after, and force a fresh
		// snapshot as a concurrent cookie-0 listing would.
		for _, c := range []string{"1", "5", "z"} {
			put(strings.Repeat(c, 31) + string("0123456789"[i%10]) + "-y")
		}
		if _, err := fsys.ReadDir(t.Context(), fsys.Root(), 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(got) {
		t.Errorf("listing not sorted: %v", got)
	}
	if len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("listing repeats a name: %v", got)
	}
	for _, name := range initial {
		if !slices.Contains(got, name) {
			t.Errorf("listing dropped %s", name)
		}
	}
}

// Many goroutines read one untrusted blob through many Files at once; the
// blob is verified once and every read returns the right bytes.
func TestParallelReads(t *testing.T) {
	var logs bytes.Buffer
	fsys := newFS(t, vfstest.Untrusted(fixtures(t)), vfs.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	n := walk(t, fsys, storetest.RootBlobB)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := fsys.Open(t.Context(), n)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for i := range 20 {
				off := int64((g*7919 + i*104729) % len(storetest.BlobB))
				p := make([]byte, 4096)
				k, err := f.ReadAt(p, off)
				if err != nil && !errors.Is(err, io.EOF) {
					t.Error(err)
					return
				}
				if !bytes.Equal(p[:k], storetest.BlobB[off:min(off+4096, int64(len(storetest.BlobB)))]) {
					t.Errorf("wrong bytes at %d", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if logs.Len() != 0 {
		t.Errorf("unexpected log: %s", logs.String())
	}
}

// Corruption is EIO at the first read and logged once per blob, with the
// digest, however often it is read.
func TestCorruptionLogged(t *testing.T) {
	var logs bytes.Buffer
	d := storeclient.HashBytes(storetest.BlobA)
	fsys := newFS(t, vfstest.Corrupt(fixtures(t), d), vfs.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	f, err := fsys.Open(t.Context(), walk(t, fsys, storetest.RootBlobA))
	if err != nil {
		t.Fatalf("open corrupt blob: %v", err)
	}
	defer f.Close()
	for range 3 {
		n, err := f.ReadAt(make([]byte, 10), 0)
		if n != 0 || vfs.Errno(err) != syscall.EIO || !errors.Is(err, storeclient.ErrCorrupt) {
			t.Fatalf("read corrupt blob: %d bytes, %v", n, err)
		}
	}
	if lines := strings.Count(logs.String(), "\n"); lines != 1 || !strings.Contains(logs.String(), d.String()) {
		t.Errorf("log: %q, want one line with %s", logs.String(), d)
	}
}

// LegacySizes accepts a child size recorded under the old rule; the default
// does not.
func TestLegacySizes(t *testing.T) {
	f := storetest.NewFixtures()
	legacy, err := f.DirectoryWithKeep.LegacySize()
	if err != nil {
		t.Fatal(err)
	}
	s := fixtures(t)
	p, _ := storetest.PathInfoFor("77777777777777777777777777777777-old", storeclient.DirectoryNode(f.DirectoryWithKeep.Digest(), legacy))
	if err := s.PutPathInfo(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		legacy bool
		want   syscall.Errno
	}{{false, syscall.EIO}, {true, 0}} {
		fsys := newFS(t, s, vfs.Options{LegacySizes: tc.legacy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		_, err := fsys.ReadDir(t.Context(), walk(t, fsys, "77777777777777777777777777777777-old"), 0, vfs.ReadDirAll)
		if vfs.Errno(err) != tc.want {
			t.Errorf("LegacySizes %v: %v, want %v", tc.legacy, err, tc.want)
		}
	}
}

func TestWalkSymlinks(t *testing.T) {
	fsys := newFS(t, fixtures(t), vfs.Options{})
	n, err := fsys.Walk(t.Context(), "/"+storetest.RootSymlinkA, true)
	if err != nil || fsys.Attr(n).Size != 2 {
		t.Errorf("walk through symlink: %v", err)
	}
	if _, err := fsys.Walk(t.Context(), storetest.RootSymlinkOut, true); vfs.Errno(err) != syscall.ENOENT {
		t.Errorf("dangling: %v", err)
	}
	if _, err := fsys.Walk(t.Context(), storetest.RootBlobA+"/x", true); vfs.Errno(err) != syscall.ENOTDIR {
		t.Errorf("below a file: %v", err)
	}
}

func TestStatfs(t *testing.T) {
	st := newFS(t, fixtures(t), vfs.Options{}).Statfs()
	if !st.ReadOnly || st.NameMax != 255 {
		t.Errorf("statfs %+v", st)
	}
}

// A handle with a flipped bit names nothing: it is ESTALE, and the store is
// not damaged, so nothing is logged at warning level or above — anyone who
// can send a handle must not be able to fill the log with corruption
// alarms.
func TestForgedHandlesAreStaleAndQuiet(t *testing.T) {
	var logs bytes.Buffer
	fsys := newFS(t, fixtures(t), vfs.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	for _, p := range []string{storetest.RootComplicated, storetest.RootComplicated + "/keep", storetest.RootComplicated + "/aa",
		storetest.RootBlobA, storetest.RootHelloExec} {
		h := walk(t, fsys, p).Handle()
		// Flip each bit of the size field (directories, files) or of the
		// parent size (symlinks), and one bit of the digest.
		sizeAt := 1 + storeclient.DigestSize
		flips := []int{8 * 1}
		if len(h) >= sizeAt+8 {
			for bit := range 64 {
				flips = append(flips, 8*sizeAt+bit)
			}
		}
		for _, bit := range flips {
			forged := bytes.Clone(h)
			forged[bit/8] ^= 1 << (bit % 8)
			n, err := fsys.ResolveHandle(t.Context(), forged)
			if vfs.Errno(err) != syscall.ESTALE {
				t.Errorf("%q with bit %d flipped: %v, %v; want ESTALE", p, bit, n, err)
			}
		}
	}
	if logs.Len() != 0 {
		t.Errorf("forged handles logged at warning or above:\n%s", logs.String())
	}
}

// A store that panics fails the one operation with EIO and a log line
// with the stack; the process goes on.
func TestStorePanicsAreEIO(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		good := newFS(t, fixtures(t), vfs.Options{})
		fsys := newFS(t, vfstest.Panicking(fixtures(t), trusted), vfs.Options{ListRoot: true, Logger: log})
		eio := func(what string, err error) {
			t.Helper()
			if vfs.Errno(err) != syscall.EIO {
				t.Errorf("trusted=%v: %s: %v, want EIO", trusted, what, err)
			}
		}
		_, err := fsys.Walk(t.Context(), storetest.RootComplicated, false)
		eio("walk (GetPathInfo)", err)
		_, err = fsys.ReadDir(t.Context(), fsys.Root(), 0, 100)
		eio("readdir of the root (ListPathInfos)", err)
		dir := walk(t, good, storetest.RootComplicated+"/keep")
		_, err = fsys.ReadDir(t.Context(), dir, 0, 100)
		eio("readdir (GetDirectory)", err)
		// A remote (untrusted) blob's reader is opened at its first read.
		if f, err := fsys.Open(t.Context(), walk(t, good, storetest.RootBlobA)); err == nil && !trusted {
			_, err = f.ReadAt(make([]byte, 10), 0)
			eio("first read (OpenBlob)", err)
			f.Close()
		} else {
			eio("open (OpenBlob)", err)
		}
		_, err = fsys.ResolveHandle(t.Context(), walk(t, good, storetest.RootBlobA).Handle())
		if vfs.Errno(err) != syscall.ESTALE && vfs.Errno(err) != syscall.EIO {
			t.Errorf("trusted=%v: resolve a file handle (StatBlob): %v, want ESTALE or EIO", trusted, err)
		}

		reads := newFS(t, vfstest.PanickingReads(fixtures(t), trusted), vfs.Options{Logger: log})
		f, err := reads.Open(t.Context(), walk(t, reads, storetest.RootBlobA))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		_, err = f.ReadAt(make([]byte, 10), 0)
		eio("read (ReadAt)", err)
		if err := f.Close(); err == nil {
			t.Error("close (Close panics): no error")
		}
		if !strings.Contains(logs.String(), "the store panicked") || !strings.Contains(logs.String(), "goroutine") {
			t.Errorf("trusted=%v: no log line with the panic and its stack:\n%s", trusted, logs.String())
		}
	}
}

package nfs

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/internal/netguard"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// fixtureFS returns a vfs over the fixtures of vectors.md.
func fixtureFS(t *testing.T, opts vfs.Options) (*vfs.FS, *memory.Store) {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	fsys, err := vfs.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, s
}

// logLines collects log output for assertions, and passes it to t.Log.
type logLines struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(string(p))
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitClosed reads from nc until the server closes it, and fails if data
// arrives instead.
func waitClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(time.Minute))
	var b [1]byte
	if n, err := nc.Read(b[:]); n > 0 || err == nil {
		t.Fatalf("server sent data instead of closing: %d bytes, %v", n, err)
	}
}

func TestIdleAndStalledConnectionsClosed(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	_, addr := serveTest(t, fsys, Options{IdleTimeout: 20 * time.Millisecond})
	for name, send := range map[string][]byte{
		"silent":            nil,
		"stops mid-record":  {0x80, 0, 0, 100, 1, 2, 3},
		"stops mid-mark":    {0x80, 0},
		"oversize declared": {0xff, 0xff, 0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.Write(send)
			waitClosed(t, nc)
		})
	}
}

func TestSecurePort(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	_, addr := serveTest(t, fsys, Options{RequireSecurePort: true})
	_, err := dialTest(addr) // from an unprivileged port
	if err == nil || !strings.Contains(err.Error(), "denied (reject_stat 1") {
		t.Errorf("mount from an unprivileged port: %v, want AUTH_ERROR", err)
	}
}

// exportList asks for MOUNT EXPORT and returns each export as "DIR
// GROUP,GROUP…".
func exportList(t *testing.T, c *testClient) []string {
	t.Helper()
	body, err := c.call(progMount, 3, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := xdrReader{b: body}
	var exports []string
	for r.u32() == 1 {
		dir := string(r.opaque(1024))
		var groups []string
		for r.u32() == 1 {
			groups = append(groups, string(r.opaque(255)))
		}
		exports = append(exports, dir+" "+strings.Join(groups, ","))
	}
	if r.err != nil || len(r.b) != 0 {
		t.Fatalf("EXPORT reply: %v, %d bytes left", r.err, len(r.b))
	}
	return exports
}

func TestMountExportAndDump(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	_, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	if exports := exportList(t, c); len(exports) != 1 || exports[0] != "/ 127.0.0.0/8,::1/128" {
		t.Errorf("EXPORT = %q, want loopback only", exports)
	}
	_, addr = serveTest(t, fsys, Options{Clients: netguard.NewAllowList([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})})
	if exports := exportList(t, dialT(t, addr)); len(exports) != 1 || exports[0] != "/ 127.0.0.0/8,::1/128,10.0.0.0/8" {
		t.Errorf("EXPORT = %q, want loopback and the allowed network", exports)
	}
	body, err := c.call(progMount, 3, 2, nil)
	if err != nil || !bytes.Equal(body, []byte{0, 0, 0, 0}) {
		t.Errorf("DUMP = %x, %v; want an empty list", body, err)
	}
	var w xdrWriter
	w.string("/")
	if body, err := c.call(progMount, 3, 3, w.b); err != nil || len(body) != 0 {
		t.Errorf("UMNT = %x, %v", body, err)
	}
	for path, want := range map[string]uint32{
		"/" + storetest.RootWithKeep:             0,
		"/" + storetest.RootBlobA:                nfs3ErrNotDir,
		"/00000000000000000000000000000000-nope": nfs3ErrNoEnt,
	} {
		var w xdrWriter
		w.string(path)
		body, err := c.call(progMount, 3, 1, w.b)
		if err != nil || len(body) < 4 || (&xdrReader{b: body}).u32() != want {
			t.Errorf("MNT %s = %x, %v; want status %d", path, body, err, want)
		}
	}
}

func TestAccessFSInfoPathconf(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	_, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	all := uint32(0x3f)
	for path, want := range map[string]uint32{
		"":                        access3Read | access3Lookup | access3Execute,
		storetest.RootBlobA:       access3Read,
		storetest.RootHelloExec:   access3Read | access3Execute,
		storetest.RootComplicated: access3Read | access3Lookup | access3Execute,
		storetest.RootSymlinkA:    access3Read,
	} {
		fh, err := c.Handle(path)
		if err != nil {
			t.Fatal(err)
		}
		var w xdrWriter
		w.opaque(fh)
		w.u32(all)
		r, err := c.nfs(4, "ACCESS", w.b)
		if err != nil {
			t.Fatal(err)
		}
		readPostOp(r)
		if got := r.u32(); got != want {
			t.Errorf("ACCESS %q = %#x, want %#x", path, got, want)
		}
	}
	r, err := c.nfs(19, "FSINFO", fhArgs(c.root))
	if err != nil {
		t.Fatal(err)
	}
	readPostOp(r)
	rtmax, rtpref := r.u32(), r.u32()
	r.u32()
	wtmax := r.u32()
	r.u32()
	r.u32()
	r.u32()
	r.u64()
	r.u64()
	props := r.u32()
	if rtmax < 1<<20 || rtpref < 1<<20 || wtmax > DefaultMaxRecordSize || props != fsinfoProperties || r.err != nil {
		t.Errorf("FSINFO rtmax %d rtpref %d wtmax %d properties %#x (%v)", rtmax, rtpref, wtmax, props, r.err)
	}
	r, err = c.nfs(20, "PATHCONF", fhArgs(c.root))
	if err != nil {
		t.Fatal(err)
	}
	readPostOp(r)
	r.u32()
	if nameMax, noTrunc, chownRestricted := r.u32(), r.u32(), r.u32(); nameMax != 255 || noTrunc != 1 || chownRestricted != 1 {
		t.Errorf("PATHCONF name_max %d no_trunc %d chown_restricted %d", nameMax, noTrunc, chownRestricted)
	}
	r, err = c.nfs(18, "FSSTAT", fhArgs(c.root))
	if err != nil {
		t.Fatal(err)
	}
	readPostOp(r)
	for range 6 {
		r.u64()
	}
	r.u32()
	if r.err != nil || len(r.b) != 0 {
		t.Errorf("FSSTAT reply: %v, %d bytes left", r.err, len(r.b))
	}
}

// TestListRootPermission checks that a root listing with list_root off is
// NFS3ERR_PERM, by READDIR and READDIRPLUS.
func TestListRootPermission(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	_, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	for _, batch := range []int{0, 1} {
		_, err := c.ReadDir("", batch)
		var ne *nfsError
		if !asNFSError(err, &ne) || ne.status != nfs3ErrPerm {
			t.Errorf("list root (batch %d): %v, want NFS3ERR_PERM", batch, err)
		}
	}
}

func asNFSError(err error, target **nfsError) bool {
	e, ok := err.(*nfsError)
	if ok {
		*target = e
	}
	return ok
}

// TestLargeDirectory lists a directory of 100 000 entries with READDIR and
// READDIRPLUS at several reply sizes: every name exactly once, in order.
func TestLargeDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 000 entries")
	}
	const n = 100000
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := storetest.PutBlob(ctx, s, storetest.BlobA); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(storetest.BlobA)
	entries := make([]storeclient.Entry, n)
	want := make([]string, n)
	for i := range entries {
		want[i] = fmt.Sprintf("f%06d", i)
		entries[i] = storeclient.Entry{Name: storeclient.Name(want[i]), Node: storeclient.FileNode(d, 2, i%2 == 0)}
	}
	dir, err := storeclient.NewDirectory(entries...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDirectory(ctx, dir); err != nil {
		t.Fatal(err)
	}
	const root = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-big"
	pi, err := storetest.PathInfoFor(root, storeclient.DirectoryNode(dir.Digest(), dir.Size()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, pi); err != nil {
		t.Fatal(err)
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	for _, batch := range []int{0, 101, 4000} {
		es, err := c.ReadDir(root, batch)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if len(es) != n+2 || es[0].Name != "." || es[1].Name != ".." {
			t.Fatalf("batch %d: %d entries, want %d with . and ..", batch, len(es), n+2)
		}
		for i, e := range es[2:] {
			if e.Name != want[i] {
				t.Fatalf("batch %d: entry %d is %q, want %q", batch, i, e.Name, want[i])
			}
		}
	}
}

// TestRestartKeepsHandles mounts, reads, stops the server, starts a new
// server (new vfs, empty caches) on the same store and address, and reads
// again through the handles from before, on a new connection as a client
// reconnecting would.
func TestRestartKeepsHandles(t *testing.T) {
	fsys, s := fixtureFS(t, vfs.Options{})
	srv1, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	paths := []string{storetest.RootBlobB, storetest.RootComplicated + "/keep", storetest.RootComplicated + "/aa", storetest.RootComplicated}
	var handles [][]byte
	var before []testAttr
	for _, p := range paths {
		fh, err := c.Handle(p)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.getattr(fh)
		if err != nil {
			t.Fatal(err)
		}
		handles, before = append(handles, fh), append(before, a)
	}
	data1, _, err := c.readFH(handles[0], 1000, 5000)
	if err != nil {
		t.Fatal(err)
	}
	srv1.Close()
	c.Close()

	fsys2, err := vfs.New(s, vfs.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(fsys2, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	done := make(chan error, 1)
	go func() { done <- s2.Serve(lis) }()
	defer func() { s2.Close(); <-done }()
	c2 := &testClient{addr: addr, root: c.root}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c2.nc, c2.br = nc, bufio.NewReader(nc)
	defer c2.Close()
	for i, fh := range handles {
		a, err := c2.getattr(fh)
		if err != nil || a != before[i] {
			t.Errorf("%s after restart: %+v, %v; want %+v", paths[i], a, err, before[i])
		}
	}
	data2, _, err := c2.readFH(handles[0], 1000, 5000)
	if err != nil || !bytes.Equal(data1, data2) {
		t.Errorf("read after restart: %d bytes, %v", len(data2), err)
	}
	es, err := c2.ReadDir(storetest.RootComplicated, 0)
	if err != nil || len(es) != 5 {
		t.Errorf("list after restart: %v, %v", es, err)
	}
	// A well-formed handle of a Directory the store does not hold.
	stale := append([]byte{3}, bytes.Repeat([]byte{7}, 40)...)
	if _, err := c2.getattr(stale); err == nil || !strings.Contains(err.Error(), fmt.Sprint(nfs3ErrStale)) {
		t.Errorf("handle of nothing: %v, want NFS3ERR_STALE", err)
	}
	_ = syscall.ESTALE
}

package nfs

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// Root entries of localFS: two big files of odd sizes, and one stored
// with PutSmallBlob, which a store that packs small blobs keeps inside a
// pack file (FileOffset > 0).
const (
	rootBig1  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-big1"
	rootBig2  = "cccccccccccccccccccccccccccccccc-big2"
	rootSmall = "dddddddddddddddddddddddddddddddd-small"
)

// localFS is vfs over an embedded store in a temporary directory (blobs
// are files: READ replies go out with sendfile) holding the fixtures and
// the files above, whose contents it returns by name.
func localFS(t testing.TB, opts vfs.Options) (*vfs.FS, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	s, err := local.Open(t.Context(), dir, local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	put := func(name string, size int, seed byte) []byte {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{'n', 'f', 's', seed}).Read(data)
		if name == rootSmall {
			if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(data), data); err != nil {
				t.Fatal(err)
			}
		} else if err := storetest.PutBlob(t.Context(), s, data); err != nil {
			t.Fatal(err)
		}
		pi, err := storetest.PathInfoFor(name, storeclient.FileNode(storeclient.HashBytes(data), uint64(size), false))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(t.Context(), pi); err != nil {
			t.Fatal(err)
		}
		return data
	}
	files := map[string][]byte{
		rootBig1:  put(rootBig1, 3<<20+12345, 1),
		rootBig2:  put(rootBig2, 1<<20+778, 2),
		rootSmall: put(rootSmall, 100_003, 3),
	}
	// Every blob reaches the disk before vfs opens the store's files.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = local.Open(t.Context(), dir, local.Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	opts.Logger = discardLogger()
	if tt, ok := t.(*testing.T); ok {
		opts.Logger = testLogger(tt)
	}
	fsys, err := vfs.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, files
}

// readArgs are READ3args.
func readArgs(fh []byte, off uint64, count uint32) []byte {
	var w xdrWriter
	w.opaque(fh)
	w.u64(off)
	w.u32(count)
	return w.b
}

// rawRead returns the whole READ3res of a READ call.
func (c *testClient) rawRead(fh []byte, off uint64, count uint32) ([]byte, error) {
	return c.call(progNFS, 3, 6, readArgs(fh, off, count))
}

// readCases are the (offset, count) pairs read from a file of size bytes:
// odd offsets and counts, around spliceMin (16 KiB) and MaxRead, up to and
// across the end of the file, past it, and offsets too large for int64.
func readCases(size int, maxRead uint32) [][2]uint64 {
	s := uint64(size)
	m := uint64(maxRead)
	cases := [][2]uint64{
		{0, m}, {0, m + 1}, {1, m - 1}, {1, 100000}, {12345, 16383}, {7, 16384}, {3, 16385},
		{99991, m - 3}, {4095, 1 << 24}, {s - 20000, 50000}, {s - 16384, 16384},
		{s - 16385, 16384}, {s - 16386, 16385}, {s - 1, 10}, {s, 100}, {s + 5, 20000},
		{1 << 40, 100000}, {1<<63 - 1, 100000}, {1 << 63, 100000}, {^uint64(0), 100000},
		{0, 0}, {1 << 16, 1}, {s - 17000, 1<<32 - 1},
	}
	r := rand.New(rand.NewPCG(uint64(size), m))
	for range 20 {
		cases = append(cases, [2]uint64{r.Uint64N(s), r.Uint64N(m + 1000)})
	}
	return cases
}

// sendfileServers serves fsys with sendfile (SendfileAlways: the test
// clients are on loopback) and without (SendfileNever), with opts
// otherwise, and mounts both.
func sendfileServers(t *testing.T, fsys *vfs.FS, opts Options) (fast *Server, fastC, slowC *testClient) {
	t.Helper()
	opts.Sendfile = SendfileAlways
	fast, fastAddr := serveTest(t, fsys, opts)
	opts.Sendfile = SendfileNever
	_, slowAddr := serveTest(t, fsys, opts)
	return fast, dialT(t, fastAddr), dialT(t, slowAddr)
}

// compareReads reads the readCases of root entry name (content data, nil
// if it is not to be checked) of size bytes through both servers: the
// replies must be the same bytes (status, attributes, count, eof, data,
// padding), and the copied ones the file's.
func compareReads(t *testing.T, name string, data []byte, size int, maxRead uint32, fastC, slowC *testClient) {
	t.Helper()
	fh, _, err := slowC.lookup(slowC.root, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range readCases(size, maxRead) {
		off, count := rc[0], uint32(min(rc[1], 1<<32-1))
		want, err := slowC.rawRead(fh, off, count)
		if err != nil {
			t.Fatalf("copy read at %d of %d: %v", off, count, err)
		}
		r := xdrReader{b: want}
		if data != nil && r.u32() == nfs3OK {
			readPostOp(&r)
			n := r.u32()
			eof := r.u32() == 1
			got := r.opaque(1 << 30)
			size := uint64(len(data))
			var wantData []byte
			if off < size {
				wantData = data[off:min(off+uint64(min(count, maxRead)), size)]
			}
			if r.err != nil || uint32(len(got)) != n || len(r.b) != 0 ||
				eof != (off+uint64(len(wantData)) >= size) || !bytes.Equal(got, wantData) {
				t.Fatalf("%s: copy read at %d of %d: %d bytes (eof %v, %v), not the file's", name, off, count, len(got), eof, r.err)
			}
		}
		got, err := fastC.rawRead(fh, off, count)
		if err != nil {
			t.Fatalf("sendfile read at %d of %d: %v", off, count, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s, max read %d: read at %d of %d: sendfile reply of %d bytes differs from the copied one of %d",
				name, maxRead, off, count, len(got), len(want))
		}
	}
}

// TestSendfileReads: READ replies sent with sendfile are byte for byte the
// replies without it, for blob files of their own and packed blobs, at
// odd offsets and counts, at and past the end, with MaxRead's clamp.
func TestSendfileReads(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	for _, maxRead := range []uint32{DefaultMaxRead, 65536} {
		fast, fastC, slowC := sendfileServers(t, fsys, Options{MaxRead: maxRead})
		for _, name := range []string{rootBig1, rootBig2, rootSmall} {
			before := fast.spliced.Load()
			compareReads(t, name, files[name], len(files[name]), maxRead, fastC, slowC)
			if fast.spliced.Load() == before {
				t.Errorf("%s, max read %d: no READ reply went out with sendfile", name, maxRead)
			}
		}
	}
}

// TestSendfileShortBlobFile: a packed blob whose pack file is shorter than
// the blob's recorded end reads as without sendfile: its bytes up to the
// cut, NFS3ERR_IO for reads across it, and the connection stays usable.
func TestSendfileShortBlobFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	n, err := fsys.Lookup(t.Context(), fsys.Root(), rootSmall)
	if err != nil {
		t.Fatal(err)
	}
	h, err := fsys.Open(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Read(make([]byte, 1), 0)
	blob, off := res.File, res.Off
	if err != nil || blob == nil || off == 0 {
		t.Fatalf("rootSmall's blob is not a packed local blob (file %v, offset %d, %v)", blob, off, err)
	}
	const cut = 60000 // the blob's bytes after this are gone
	if err := os.Truncate(blob.Name(), off+cut); err != nil {
		t.Fatal(err)
	}
	h.Close()
	fast, fastC, slowC := sendfileServers(t, fsys, Options{})
	data := files[rootSmall]
	compareReads(t, rootSmall, nil, len(data), DefaultMaxRead, fastC, slowC)
	fh, _, err := fastC.lookup(fastC.root, rootSmall)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{fastC, slowC} {
		for round := range 2 {
			if b, _, err := c.readFH(fh, 0, 40000); err != nil || !bytes.Equal(b, data[:40000]) {
				t.Fatalf("round %d: read before the cut: %d bytes, %v", round, len(b), err)
			}
			var ne *nfsError
			if _, _, err := c.readFH(fh, cut-20000, 40000); !asNFSError(err, &ne) || ne.status != nfs3ErrIO {
				t.Errorf("round %d: read across the cut: %v, want NFS3ERR_IO", round, err)
			}
		}
	}
	if n := fast.spliced.Load(); n != 0 {
		t.Errorf("%d READ replies of a short blob file went out with sendfile", n)
	}
}

// TestSendfilePipelined sends many READs (and GETATTRs) at once on one
// connection, which the server answers concurrently: every reply is whole
// (replies never interleave) and has its call's bytes.
func TestSendfilePipelined(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	fast, addr := serveTest(t, fsys, Options{Sendfile: SendfileAlways})
	c := dialT(t, addr)
	names := []string{rootBig1, rootBig2, rootSmall}
	fhs := map[string][]byte{}
	for _, name := range names {
		fh, _, err := c.lookup(c.root, name)
		if err != nil {
			t.Fatal(err)
		}
		fhs[name] = fh
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(2 * time.Minute))
	type req struct {
		name      string
		off, size uint64
		getattr   bool
	}
	r := rand.New(rand.NewPCG(1, 2))
	reqs := map[uint32]req{}
	var out []byte
	for xid := uint32(100); xid < 260; xid++ {
		q := req{name: names[xid%3], size: r.Uint64N(1 << 20)}
		q.off = r.Uint64N(uint64(len(files[q.name])))
		q.getattr = xid%7 == 0
		reqs[xid] = q
		proc, args := uint32(6), readArgs(fhs[q.name], q.off, uint32(q.size))
		if q.getattr {
			proc, args = 1, fhArgs(fhs[q.name])
		}
		rec := append(make([]byte, 4), callRecord(xid, rpcVersion, progNFS, 3, proc, authNone, nil, args)...)
		setRecordMark(rec)
		out = append(out, rec...)
	}
	done := make(chan error, 1)
	go func() {
		_, err := nc.Write(out)
		done <- err
	}()
	br := bufio.NewReader(nc)
	seen := map[uint32]bool{}
	for len(seen) < len(reqs) {
		rec, err := readRecord(br, nil, 4<<20)
		if err != nil {
			t.Fatalf("after %d replies: %v", len(seen), err)
		}
		rd := xdrReader{b: rec}
		xid := rd.u32()
		q, ok := reqs[xid]
		if !ok || seen[xid] {
			t.Fatalf("reply with xid %d: unknown or repeated", xid)
		}
		seen[xid] = true
		if rd.u32() != msgReply || rd.u32() != replyAccepted || rd.u32() != authNone || rd.u32() != 0 ||
			rd.u32() != acceptSuccess || rd.u32() != nfs3OK {
			t.Fatalf("xid %d: reply %x", xid, rec[:min(len(rec), 64)])
		}
		data := files[q.name]
		if q.getattr {
			if a := readFattr(&rd); a.size != uint64(len(data)) || len(rd.b) != 0 {
				t.Errorf("xid %d: GETATTR size %d, %d bytes left", xid, a.size, len(rd.b))
			}
			continue
		}
		readPostOp(&rd)
		n := rd.u32()
		rd.u32() // eof
		got := rd.opaque(1 << 30)
		end := min(q.off+q.size, uint64(len(data)))
		if rd.err != nil || int(n) != len(got) || len(rd.b) != 0 || !bytes.Equal(got, data[q.off:end]) {
			t.Errorf("xid %d (%s, %d bytes at %d): %d bytes that are not the file's", xid, q.name, q.size, q.off, n)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fast.spliced.Load() == 0 {
		t.Error("no READ reply went out with sendfile")
	}
}

// readCounter is a vfs.Observer that adds up the reads and their bytes.
type readCounter struct {
	mu           sync.Mutex
	reads, bytes int
}

func (r *readCounter) OpStart(string, vfs.Op) {}

func (r *readCounter) OpEnd(_ string, op vfs.Op, _ time.Duration, n int, _ error) {
	if op == vfs.OpRead {
		r.mu.Lock()
		r.reads++
		r.bytes += n
		r.mu.Unlock()
	}
}

func (r *readCounter) CacheLookup(string, bool)                 {}
func (r *readCounter) BackendCall(string, time.Duration, error) {}

// TestSendfileObserved: reads sent with sendfile reach the Observer (the
// metrics) as reads through vfs do.
func TestSendfileObserved(t *testing.T) {
	var obs readCounter
	fsys, files := localFS(t, vfs.Options{Observer: &obs})
	fast, addr := serveTest(t, fsys, Options{Sendfile: SendfileAlways})
	c := dialT(t, addr)
	fh, _, err := c.lookup(c.root, rootBig1)
	if err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	obs.reads, obs.bytes = 0, 0
	obs.mu.Unlock()
	total := 0
	for _, off := range []uint64{0, 1 << 20, 3<<20 - 5000} { // each ≥ spliceMin
		b, _, err := c.readFH(fh, off, 1<<20)
		if err != nil || !bytes.Equal(b, files[rootBig1][off:off+uint64(len(b))]) {
			t.Fatalf("read at %d: %d bytes, %v", off, len(b), err)
		}
		total += len(b)
	}
	// The server accounts for a reply once it is sent, which may be just
	// after the client has it: wait (bounded) for the last one.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		obs.mu.Lock()
		done := obs.reads >= 3
		obs.mu.Unlock()
		if done && (runtime.GOOS != "linux" || fast.spliced.Load() >= 3) {
			break
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.reads != 3 || obs.bytes != total {
		t.Errorf("observer saw %d reads of %d bytes; want 3 of %d", obs.reads, obs.bytes, total)
	}
	if runtime.GOOS == "linux" && fast.spliced.Load() != 3 {
		t.Errorf("%d of 3 READ replies went out with sendfile", fast.spliced.Load())
	}
}

// TestSendfileStuckClient: a client that sends READs and never reads the
// replies blocks only its own connection, and Close still ends it.
func TestSendfileStuckClient(t *testing.T) {
	fsys, files := localFS(t, vfs.Options{})
	srv, err := New(fsys, Options{Logger: testLogger(t), Sendfile: SendfileAlways})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	addr := lis.Addr().String()
	c := dialT(t, addr)
	fh, _, err := c.lookup(c.root, rootBig1)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for xid := uint32(10); xid < 74; xid++ { // 64 MiB of replies nobody reads
		rec := append(make([]byte, 4), callRecord(xid, rpcVersion, progNFS, 3, 6, authNone, nil, readArgs(fh, 0, 1<<20))...)
		setRecordMark(rec)
		out = append(out, rec...)
	}
	stuck, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := stuck.Write(out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the server is blocked writing now
	if b, _, err := c.readFH(fh, 5, 100000); err != nil || !bytes.Equal(b, files[rootBig1][5:5+len(b)]) {
		t.Errorf("another client's read while one is stuck: %d bytes, %v", len(b), err)
	}
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a client stuck in sendfile")
	}
	<-served
}

// BenchmarkReadLocal reads a 3 MiB file of the embedded store in 1 MiB
// READs, with sendfile and without; cpu-ns/op is the whole process's
// (server and test client) CPU time per READ.
func BenchmarkReadLocal(b *testing.B) {
	fsys, _ := localFS(b, vfs.Options{})
	for _, mode := range []SendfileMode{SendfileAlways, SendfileNever} {
		b.Run("Sendfile="+mode.String(), func(b *testing.B) {
			s, err := New(fsys, Options{Logger: discardLogger(), Sendfile: mode})
			if err != nil {
				b.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(lis) }()
			c, err := dialTest(lis.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close(); s.Close(); <-done })
			fh, _, err := c.lookup(c.root, rootBig1)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(1 << 20)
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			i := 0
			for b.Loop() {
				off := uint64(i%3) << 20
				i++
				if data, _, err := c.readFH(fh, off, 1<<20); err != nil || len(data) != 1<<20 {
					b.Fatalf("READ: %d bytes, %v", len(data), err)
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
				syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestSendfileMode: by default only clients on other hosts get sendfile;
// a loopback client's READ replies are copied.
func TestSendfileMode(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	for _, tc := range []struct {
		mode   SendfileMode
		remote net.Addr
		want   bool
	}{
		{SendfileRemote, tcp("127.0.0.1:700"), false},
		{SendfileRemote, tcp("127.0.0.53:700"), false},
		{SendfileRemote, tcp("[::1]:700"), false},
		{SendfileRemote, tcp("[::ffff:127.0.0.1]:700"), false},
		{SendfileRemote, tcp("192.168.1.20:700"), true},
		{SendfileRemote, tcp("[2001:db8::1]:700"), true},
		{SendfileRemote, &net.UnixAddr{Name: "/run/x", Net: "unix"}, false},
		{SendfileAlways, tcp("127.0.0.1:700"), true},
		{SendfileNever, tcp("192.168.1.20:700"), false},
		{SendfileMode(9), tcp("192.168.1.20:700"), false},
	} {
		if got := tc.mode.usedFor(tc.remote); got != tc.want {
			t.Errorf("%v.usedFor(%v) = %v, want %v", tc.mode, tc.remote, got, tc.want)
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	// The default server copies for this loopback client.
	fsys, files := localFS(t, vfs.Options{})
	srv, addr := serveTest(t, fsys, Options{})
	c := dialT(t, addr)
	fh, _, err := c.lookup(c.root, rootBig1)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := c.readFH(fh, 0, 1<<20)
	if err != nil || !bytes.Equal(b, files[rootBig1][:len(b)]) || len(b) == 0 {
		t.Fatalf("READ: %d bytes, %v", len(b), err)
	}
	if n := srv.spliced.Load(); n != 0 {
		t.Errorf("%d READ replies to a loopback client went out with sendfile by default", n)
	}
}

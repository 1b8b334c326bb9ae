package ninep_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/internal/netguard"
	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// Two big files, so that a fid reused for the other one shows whose bytes
// it reads.
const (
	rootBig1 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-big1"
	rootBig2 = "cccccccccccccccccccccccccccccccc-big2"
	// rootSmall is stored with PutSmallBlob: in a store that packs small
	// blobs it starts inside a pack file (FileOffset > 0).
	rootSmall = "dddddddddddddddddddddddddddddddd-small"
)

// localFS is vfs over an embedded store in a temporary directory (blobs are
// files: reads go out with sendfile) holding the fixtures, two big files
// of odd sizes and a small one, whose contents it returns by root name.
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
		rand.NewChaCha8([32]byte{'9', 'p', seed}).Read(data)
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
		rootBig2:  put(rootBig2, 1<<20+777, 2),
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
	opts.Logger = testLog(t)
	fsys, err := vfs.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, files
}

// readResult is what one Tread got: its bytes or its errno.
type readResult struct {
	data []byte
	err  error
}

// readCases are the (offset, count) pairs read from a file of size bytes at
// msize: odd offsets and counts, around spliceMin (16 KiB) and msize, up to
// and across the end of the file, past it, and offsets too large for
// int64.
func readCases(size int, msize uint32) [][2]uint64 {
	s := uint64(size)
	cases := [][2]uint64{
		{0, uint64(msize)}, {1, 100000}, {12345, 16383}, {7, 16384}, {3, 16385},
		{99991, uint64(msize) - 11}, {99991, uint64(msize) - 12}, {4095, 1 << 24},
		{s - 20000, 50000}, {s - 16384, 16384}, {s - 16385, 16384}, {s - 1, 10},
		{s, 100}, {s + 5, 20000}, {1 << 40, 100000}, {1<<63 - 1, 100000},
		{1 << 63, 100000}, {^uint64(0), 100000}, {0, 0}, {1 << 20, 1},
	}
	r := rand.New(rand.NewPCG(uint64(size), uint64(msize)))
	for range 20 {
		cases = append(cases, [2]uint64{r.Uint64N(s), r.Uint64N(uint64(msize) + 1000)})
	}
	return cases
}

// sendfileServers starts fsys with sendfile over TCP and over a unix
// socket, and without sendfile over TCP; it returns the first two servers
// and the three addresses.
func sendfileServers(t *testing.T, fsys *vfs.FS) (fast, unix *ninep.Server, fastAddr, unixAddr, slowAddr string) {
	t.Helper()
	fast, fastAddr = startServer(t, fsys, "tcp", ninep.Options{})
	unix, unixAddr = startServer(t, fsys, "unix", ninep.Options{})
	_, slowAddr = startServer(t, fsys, "tcp", ninep.Options{NoSendfile: true})
	return fast, unix, fastAddr, unixAddr, slowAddr
}

// openRaw opens a raw session on network/addr at msize with fid 2 open
// on root name.
func openRaw(t testing.TB, network, addr string, msize uint32, name string) *rawConn {
	t.Helper()
	c := dialRaw(t, network, addr)
	c.mustVersion(msize)
	if _, err := c.attach(1, "", "", 0); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if _, err := c.walk(1, 2, name); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSendfileReads: reads sent with sendfile (a fid's first read and
// the later ones) carry exactly the bytes and errors of reads
// copied through memory, at odd offsets and counts, at the end of the file
// and past it, over TCP and unix sockets.
func TestSendfileReads(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	fast, unix, fastAddr, unixAddr, slowAddr := sendfileServers(t, fsys)
	for _, name := range []string{rootBig1, rootSmall} {
		for _, msize := range []uint32{8192, 65536, 1 << 20} {
			compareReads(t, name, files[name], msize, slowAddr, fastAddr, unixAddr)
		}
	}
	if n := ninep.SplicedReplies(fast); n == 0 {
		t.Error("no Rread went out with sendfile over TCP")
	}
	if n := ninep.SplicedReplies(unix); n == 0 {
		t.Error("no Rread went out with sendfile over the unix socket")
	}
}

// compareReads reads the readCases of root name (content data) from the
// copying server and the two sendfile servers and compares.
func compareReads(t *testing.T, name string, data []byte, msize uint32, slowAddr, fastAddr, unixAddr string) {
	t.Helper()
	conns := []struct {
		name string
		c    *rawConn
	}{
		{"copy", openRaw(t, "tcp", slowAddr, msize, name)},
		{"sendfile tcp", openRaw(t, "tcp", fastAddr, msize, name)},
		{"sendfile unix", openRaw(t, "unix", unixAddr, msize, name)},
	}
	// Every case twice: a fid's first read (which checks the blob file's
	// size) and a later one.
	for round := range 2 {
		for _, rc := range readCases(len(data), msize) {
			off, count := rc[0], rc[1]
			var want readResult
			for i, c := range conns {
				var got readResult
				got.data, got.err = c.c.read(2, off, uint32(min(count, 1<<32-1)))
				if i == 0 {
					want = got
					// The copying server is right by TestRead; check it
					// against the file all the same.
					if want.err == nil && off < uint64(len(data)) {
						end := min(off+min(count, uint64(msize)-11), uint64(len(data)))
						if !bytes.Equal(want.data, data[off:end]) {
							t.Fatalf("%s, msize %d: copy read at %d of %d: %d bytes, not the file's %d", name, msize, off, count, len(want.data), end-off)
						}
					}
					continue
				}
				if !errors.Is(got.err, want.err) || (got.err == nil) != (want.err == nil) || !bytes.Equal(got.data, want.data) {
					t.Errorf("%s, msize %d round %d: %s read at %d of %d: %d bytes, %v; copy: %d bytes, %v",
						name, msize, round, c.name, off, count, len(got.data), got.err, len(want.data), want.err)
				}
			}
		}
	}
}

// TestSendfileFids: a fid clunked and walked again to another file, or
// walked to a new fid number, reads that file's bytes; a small file, a
// directory and an xattr fid read as without sendfile.
func TestSendfileFids(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	big1, big2 := files[rootBig1], files[rootBig2]
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := openRaw(t, "tcp", addr, 1<<16, rootBig1)
	for round := range 3 {
		b, err := c.read(2, 100, 40000)
		if err != nil || !bytes.Equal(b, big1[100:40100]) {
			t.Fatalf("round %d: read big1: %d bytes, %v", round, len(b), err)
		}
	}
	if err := c.clunk(2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.read(2, 0, 40000); !errors.Is(err, syscall.EBADF) {
		t.Errorf("read of a clunked fid: %v, want EBADF", err)
	}
	if _, err := c.walk(1, 2, rootBig2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		b, err := c.read(2, 100, 40000)
		if err != nil || !bytes.Equal(b, big2[100:40100]) {
			t.Fatalf("round %d: read big2 through the reused fid: %d bytes, %v", round, len(b), err)
		}
	}
	// A small file (below the sendfile threshold) and a directory.
	if _, err := c.walk(1, 3, rootB); err != nil {
		t.Fatal(err)
	}
	c.lopen(3, 0)
	if b, err := c.read(3, 0, 1<<16); err != nil || !bytes.Equal(b, storetest.BlobB[:min(len(storetest.BlobB), 1<<16-11)]) {
		t.Errorf("read BLOB_B: %d bytes, %v", len(b), err)
	}
	if _, err := c.walk(1, 4, rootKeep); err != nil {
		t.Fatal(err)
	}
	c.lopen(4, 0)
	if _, err := c.read(4, 0, 40000); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("read of a directory: %v, want EISDIR", err)
	}
	// An xattr fid walked from the read fid reads the attribute.
	want, err := fsys.Getxattr(mustLookup(t, fsys, rootBig2), "user.snix.castore.blob.digest", make([]byte, 256))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.xattr(2, 5, "user.snix.castore.blob.digest"); err != nil || len(got) != want {
		t.Errorf("xattr of the read fid: %d bytes, %v; want %d", len(got), err, want)
	}
}

// TestSendfileWalkgetattr: a fid read with sendfile, replaced by p9's
// Twalkgetattr (which makes newfid as Twalk does), is no longer answered
// from the old file: read unopened it gets EINVAL, opened it reads the new
// file's bytes.
// With an xattr fid keeping the old file open, and without.
func TestSendfileWalkgetattr(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	for _, keep := range []bool{false, true} {
		c := openRaw(t, "tcp", addr, 1<<16, rootSmall)
		for round := range 2 {
			if b, err := c.read(2, 0, 40000); err != nil || !bytes.Equal(b, files[rootSmall][:40000]) {
				t.Fatalf("keep %v round %d: read: %d bytes, %v", keep, round, len(b), err)
			}
		}
		if keep {
			if _, err := c.xattr(2, 7, "user.snix.castore.blob.digest"); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.walkgetattr(1, 2, rootBig2); err != nil {
			t.Fatalf("Twalkgetattr: %v", err)
		}
		for round := range 2 {
			b, err := c.read(2, 0, 40000)
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("keep %v round %d: read of the replaced, unopened fid: %d bytes, %v; want EINVAL", keep, round, len(b), err)
			}
		}
		if _, _, err := c.lopen(2, 0); err != nil {
			t.Fatal(err)
		}
		for round := range 3 {
			if b, err := c.read(2, 100, 40000); err != nil || !bytes.Equal(b, files[rootBig2][100:40100]) {
				t.Errorf("keep %v round %d: read of the replaced fid: %d bytes, %v; want big2's", keep, round, len(b), err)
			}
		}
	}
}

// TestSendfileShortBlobFile: a blob whose file is shorter than the blob's
// recorded end (a packed blob cut short) reads as it does without
// sendfile: its bytes up to the cut, EIO for reads across it, and the
// connection stays usable.
func TestSendfileShortBlobFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	h, err := fsys.Open(t.Context(), mustLookup(t, fsys, rootSmall))
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
	fast, unix, fastAddr, unixAddr, slowAddr := sendfileServers(t, fsys)
	data := files[rootSmall]
	for _, msize := range []uint32{8192, 65536} {
		compareReads(t, rootSmall, data, msize, slowAddr, fastAddr, unixAddr)
	}
	for _, addr := range []string{fastAddr, slowAddr} {
		c := openRaw(t, "tcp", addr, 1<<16, rootSmall)
		for round := range 2 {
			if b, err := c.read(2, 0, 40000); err != nil || !bytes.Equal(b, data[:40000]) {
				t.Fatalf("round %d: read before the cut: %d bytes, %v", round, len(b), err)
			}
			if _, err := c.read(2, cut-20000, 40000); !errors.Is(err, syscall.EIO) {
				t.Errorf("round %d: read across the cut: %v, want EIO", round, err)
			}
		}
	}
	if n := ninep.SplicedReplies(fast) + ninep.SplicedReplies(unix); n != 0 {
		t.Errorf("%d Rreads of a short blob file went out with sendfile", n)
	}
}

// mustLookup returns the root entry name of fsys.
func mustLookup(t *testing.T, fsys *vfs.FS, name string) vfs.Node {
	t.Helper()
	n, err := fsys.Lookup(t.Context(), fsys.Root(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSendfilePipelined sends many Treads at once, on fids read before
// and fids not yet read, with a Tflush among them: every
// reply is whole (replies never interleave), has its request's bytes, and
// the flushed read's reply comes before Rflush.
func TestSendfilePipelined(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	big1, big2 := files[rootBig1], files[rootBig2]
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	const msize = 1 << 20
	c := openRaw(t, "tcp", addr, msize, rootBig1)
	if _, err := c.walk(1, 3, rootBig2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.lopen(3, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.read(2, 0, 20000); err != nil { // fid 2 has been read from
		t.Fatal(err)
	}
	type req struct {
		fid       uint32
		off, size uint64
	}
	r := rand.New(rand.NewPCG(1, 2))
	reqs := map[uint16]req{}
	var out []byte
	for tag := uint16(100); tag < 164; tag++ {
		q := req{fid: 2 + uint32(tag%2), size: r.Uint64N(msize)}
		q.off = r.Uint64N(uint64(len(big2)))
		reqs[tag] = q
		out = append(out, frame(tread, tag, msg{}.u32(q.fid).u64(q.off).u32(uint32(q.size)))...)
		if tag == 120 {
			out = append(out, frame(tflush, 200, msg{}.u16(120))...)
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.send(out) }()
	seen := map[uint16]bool{}
	for len(seen) < len(reqs)+1 {
		typ, tag, body, err := c.recv()
		if err != nil {
			t.Fatalf("after %d replies: %v", len(seen), err)
		}
		if seen[tag] {
			t.Fatalf("two replies for tag %d", tag)
		}
		seen[tag] = true
		if tag == 200 {
			if !seen[120] {
				t.Error("Rflush came before the flushed Tread's reply")
			}
			continue
		}
		q, ok := reqs[tag]
		if !ok || typ != tread+1 {
			t.Fatalf("reply type %d tag %d", typ, tag)
		}
		data := map[uint32][]byte{2: big1, 3: big2}[q.fid]
		n := binary.LittleEndian.Uint32(body)
		end := min(q.off+q.size, uint64(len(data)))
		if int(n) != len(body)-4 || !bytes.Equal(body[4:], data[q.off:end]) {
			t.Errorf("tag %d (fid %d, %d bytes at %d): %d bytes that are not the file's", tag, q.fid, q.size, q.off, n)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
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
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := openRaw(t, "tcp", addr, 1<<20, rootBig1)
	total := 0
	for _, off := range []uint64{0, 1 << 20, 3 << 20} {
		b, err := c.read(2, off, 1<<20)
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
		if done {
			break
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.reads != 3 || obs.bytes != total {
		t.Errorf("observer saw %d reads of %d bytes; want 3 of %d", obs.reads, obs.bytes, total)
	}
}

// TestSendfileStuckClient: a client that sends reads and never reads the
// replies blocks only its own connection, and Close still ends it.
func TestSendfileStuckClient(t *testing.T) {
	fsys, files := localFS(t, vfs.Options{})
	srv, addr := startServer(t, fsys, "tcp", ninep.Options{})
	c := openRaw(t, "tcp", addr, 1<<20, rootBig1)
	if _, err := c.read(2, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for tag := uint16(10); tag < 74; tag++ { // 64 MiB of replies nobody reads
		out = append(out, frame(tread, tag, msg{}.u32(2).u64(0).u32(1<<20))...)
	}
	if err := c.send(out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the server is blocked writing now
	other := openRaw(t, "tcp", addr, 1<<16, rootBig1)
	if b, err := other.read(2, 5, 100000); err != nil || !bytes.Equal(b, files[rootBig1][5:5+len(b)]) {
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
}

// TestSendfileNetguard: reads go out with sendfile on connections from a
// netguard listener, as the daemon serves them.
func TestSendfileNetguard(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	fsys, files := localFS(t, vfs.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	guarded := netguard.New(lis, netguard.Options{Protocol: "ninep", Logger: testLog(t)})
	defer guarded.Close()
	srv := ninep.New(fsys, ninep.Options{Logger: testLog(t)})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context(), guarded) }()
	defer func() {
		srv.Close()
		<-done
	}()
	c := openRaw(t, "tcp", lis.Addr().String(), 1<<20, rootBig1)
	for _, off := range []uint64{0, 1 << 20} {
		if b, err := c.read(2, off, 100000); err != nil || !bytes.Equal(b, files[rootBig1][off:off+100000]) {
			t.Fatalf("read at %d: %d bytes, %v", off, len(b), err)
		}
	}
	if n := ninep.SplicedReplies(srv); n == 0 {
		t.Error("no Rread went out with sendfile on a netguard connection")
	}
}

package ninep_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// panicStore is a memory store whose calls panic while its switches are
// on: GetPathInfo (a walk from the root), OpenBlob (Tlopen) and the Close
// of the blob readers it returned (Tclunk, the end of a connection).
type panicStore struct {
	storeclient.Store
	pathInfo, open, closeReader atomic.Bool
}

func (s *panicStore) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	if s.pathInfo.Load() {
		panic("injected: GetPathInfo")
	}
	return s.Store.GetPathInfo(ctx, d)
}

func (s *panicStore) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if s.open.Load() {
		panic("injected: OpenBlob")
	}
	r, err := s.Store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	return panicReader{r, s}, nil
}

type panicReader struct {
	storeclient.BlobReader
	s *panicStore
}

func (r panicReader) Close() error {
	if r.s.closeReader.Load() {
		panic("injected: BlobReader.Close")
	}
	return r.BlobReader.Close()
}

// logBuffer collects log lines for a test to look at.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many lines hold s.
func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// waitFor waits (bounded) until the log holds s n times.
func (l *logBuffer) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l.count(s) >= n {
			return
		}
	}
	t.Fatalf("log has %q %d times, want %d:\n%s", s, l.count(s), n, l)
}

// TestPanicInRequest: a panic under a request (here in the store, through
// vfs) answers that request EIO, is logged once at Error with the stack,
// and leaves the connection and the server serving; a panic in a Close at
// the end of a connection does not end the process either.
func TestPanicInRequest(t *testing.T) {
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	if err := storetest.NewFixtures().Fill(context.Background(), mem, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	ps := &panicStore{Store: mem}
	fsys, err := vfs.New(ps, vfs.Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	_, addr := startServer(t, fsys, "tcp", ninep.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := session(t, addr, 8192)

	ps.pathInfo.Store(true)
	_, err = c.walk(1, 2, rootA)
	wantErrno(t, "walk with a panicking store", err, syscall.EIO)
	ps.pathInfo.Store(false)
	if _, err := c.walk(1, 2, rootA); err != nil {
		t.Fatalf("walk after the panic: %v", err)
	}
	ps.open.Store(true)
	_, _, err = c.lopen(2, 0)
	wantErrno(t, "open with a panicking store", err, syscall.EIO)
	ps.open.Store(false)
	if _, _, err := c.lopen(2, 0); err != nil {
		t.Fatalf("open after the panic: %v", err)
	}
	if b, err := c.read(2, 0, 100); err != nil || !bytes.Equal(b, storetest.BlobA) {
		t.Fatalf("read after the panics: %x, %v", b, err)
	}
	if n := logs.count("level=ERROR msg=\"ninep: panic in a request; answered EIO\""); n != 2 {
		t.Errorf("%d panic lines at Error, want 2:\n%s", n, &logs)
	}
	if n := logs.count("stack="); n != 1 {
		t.Errorf("%d stacks logged, want 1 (the connection's first panic)", n)
	}
	if !strings.Contains(logs.String(), "request=Twalk") || !strings.Contains(logs.String(), "request=Tlopen") || !strings.Contains(logs.String(), "client=127.0.0.1:") {
		t.Errorf("panic lines without the request or client:\n%s", &logs)
	}

	// The blob reader's Close panics when the connection ends with the
	// file open: the library closes it outside any handler.
	ps.closeReader.Store(true)
	c.conn.Close()
	logs.waitFor(t, "request=Tclunk", 1)
	ps.closeReader.Store(false)
	stillServes(t, addr)
}

// panicObserver is a vfs.Observer whose OpStart of reads panics while on
// is set.
type panicObserver struct{ on atomic.Bool }

func (o *panicObserver) OpStart(_ string, op vfs.Op) {
	if op == vfs.OpRead && o.on.Load() {
		panic("injected: Observer.OpStart")
	}
}
func (o *panicObserver) OpEnd(string, vfs.Op, time.Duration, int, error) {}
func (o *panicObserver) CacheLookup(string, bool)                        {}
func (o *panicObserver) BackendCall(string, time.Duration, error)        {}

// TestPanicInWireLayer: a panic in the wire layer's own paths (here in the
// Observer it calls for reads sent with sendfile: in the reply the library
// writes, and in a Tread the wire layer answers) closes that connection
// with one Error line; other connections and the server go on. A copied
// read that panics (in vfs) answers EIO.
func TestPanicInWireLayer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	var obs panicObserver
	fsys, files := localFS(t, vfs.Options{Observer: &obs})
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, addr := startServer(t, fsys, "tcp", ninep.Options{Logger: log})
	_, slowAddr := startServer(t, fsys, "tcp", ninep.Options{Logger: log, NoSendfile: true})
	check := func() {
		t.Helper()
		o := openRaw(t, "tcp", addr, 1<<16, rootBig1)
		if b, err := o.read(2, 5, 40000); err != nil || !bytes.Equal(b, files[rootBig1][5:40005]) {
			t.Fatalf("another connection's read: %d bytes, %v", len(b), err)
		}
	}

	// The library's Rread, sent by the wire layer with sendfile.
	c := openRaw(t, "tcp", addr, 1<<16, rootBig1)
	obs.on.Store(true)
	c.send(frame(tread, 1, msg{}.u32(2).u64(0).u32(40000)))
	if !c.isClosed() {
		t.Error("panic while sending a reply: connection still open")
	}
	obs.on.Store(false)
	logs.waitFor(t, "request=Rread", 1)
	check()

	// A Tread the wire layer answers itself (the fid's second read).
	c = openRaw(t, "tcp", addr, 1<<16, rootBig1)
	if _, err := c.read(2, 0, 40000); err != nil {
		t.Fatal(err)
	}
	obs.on.Store(true)
	c.send(frame(tread, 1, msg{}.u32(2).u64(0).u32(40000)))
	if !c.isClosed() {
		t.Error("panic while answering a Tread: connection still open")
	}
	obs.on.Store(false)
	logs.waitFor(t, "request=Tread", 1)
	if n := logs.count(`msg="ninep: panic in the wire layer; closing the connection"`); n != 2 {
		t.Errorf("%d wire-layer panic lines, want 2:\n%s", n, &logs)
	}
	check()

	// A copied read: vfs.File.ReadAt calls the Observer.
	c = openRaw(t, "tcp", slowAddr, 1<<16, rootBig1)
	obs.on.Store(true)
	_, err := c.read(2, 0, 40000)
	obs.on.Store(false)
	wantErrno(t, "copied read with a panicking Observer", err, syscall.EIO)
	if b, err := c.read(2, 0, 40000); err != nil || !bytes.Equal(b, files[rootBig1][:40000]) {
		t.Errorf("read after the panic: %d bytes, %v", len(b), err)
	}
}

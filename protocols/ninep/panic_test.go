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
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

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

// TestPanicInRequest: a panic under a request (here in vfs's Observer,
// which vfs calls outside its own recovery of store panics) answers that
// request EIO, is logged once at Error with the stack, and leaves the
// connection and the server serving; a panic in a Close at the end of a
// connection does not end the process either. A panic in the store itself
// is answered EIO by vfs before it reaches the 9P layer.
func TestPanicInRequest(t *testing.T) {
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	if err := storetest.NewFixtures().Fill(context.Background(), mem, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	var obs panicObserver
	fsys, err := vfs.New(mem, vfs.Options{Logger: testLog(t), Observer: &obs})
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	_, addr := startServer(t, fsys, "tcp", ninep.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := session(t, addr, 8192)

	obs.set(vfs.OpLookup)
	_, err = c.walk(1, 2, rootA)
	wantErrno(t, "walk with a panicking vfs", err, syscall.EIO)
	obs.set()
	if _, err := c.walk(1, 2, rootA); err != nil {
		t.Fatalf("walk after the panic: %v", err)
	}
	obs.set(vfs.OpOpen)
	_, _, err = c.lopen(2, 0)
	wantErrno(t, "open with a panicking vfs", err, syscall.EIO)
	obs.set()
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

	// A Close panics when the connection ends with the file open: the
	// server closes it outside any request.
	obs.set(vfs.OpClose)
	c.conn.Close()
	logs.waitFor(t, "request=Tclunk", 1)
	obs.set()
	stillServes(t, addr)
}

// panicObserver is a vfs.Observer whose OpStart panics for the operations
// set (set with none: never).
type panicObserver struct{ ops atomic.Uint32 }

func (o *panicObserver) set(ops ...vfs.Op) {
	var m uint32
	for _, op := range ops {
		m |= 1 << op
	}
	o.ops.Store(m)
}

func (o *panicObserver) OpStart(_ string, op vfs.Op) {
	if o.ops.Load()&(1<<op) != 0 {
		panic("injected: Observer.OpStart " + op.String())
	}
}
func (o *panicObserver) OpEnd(string, vfs.Op, time.Duration, int, error) {}
func (o *panicObserver) CacheLookup(string, bool)                        {}
func (o *panicObserver) BackendCall(string, time.Duration, error)        {}

// TestPanicInWireLayer: a read that panics in vfs (sent with sendfile,
// again on a fid already read from, or copied) answers EIO and the
// connection goes on; a panic in the message loop itself (here in the
// logger it calls for a refused Tversion) closes that connection with one
// Error line, and other connections and the server go on.
func TestPanicInWireLayer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	var obs panicObserver
	fsys, files := localFS(t, vfs.Options{Observer: &obs})
	var logs logBuffer
	log := slog.New(panicHandler{slog.NewTextHandler(&logs, nil)})
	_, addr := startServer(t, fsys, "tcp", ninep.Options{Logger: log})
	_, slowAddr := startServer(t, fsys, "tcp", ninep.Options{Logger: log, NoSendfile: true})
	check := func() {
		t.Helper()
		o := openRaw(t, "tcp", addr, 1<<16, rootBig1)
		if b, err := o.read(2, 5, 40000); err != nil || !bytes.Equal(b, files[rootBig1][5:40005]) {
			t.Fatalf("another connection's read: %d bytes, %v", len(b), err)
		}
	}

	// vfs.File.Read calls the Observer (the read is then sent with
	// sendfile): EIO, and the connection goes on.
	c := openRaw(t, "tcp", addr, 1<<16, rootBig1)
	obs.set(vfs.OpRead)
	_, err := c.read(2, 0, 40000)
	obs.set()
	wantErrno(t, "sendfile read with a panicking Observer", err, syscall.EIO)
	check()

	// The fid's second read, after one sent with sendfile.
	c = openRaw(t, "tcp", addr, 1<<16, rootBig1)
	if _, err := c.read(2, 0, 40000); err != nil {
		t.Fatal(err)
	}
	obs.set(vfs.OpRead)
	_, err = c.read(2, 0, 40000)
	obs.set()
	wantErrno(t, "second read with a panicking Observer", err, syscall.EIO)
	if b, err := c.read(2, 7, 40000); err != nil || !bytes.Equal(b, files[rootBig1][7:40007]) {
		t.Errorf("read after the panic: %d bytes, %v", len(b), err)
	}

	// A panic in the message loop.
	raw := dialRaw(t, "tcp", addr)
	raw.send(frame(tversion, noTag, msg{}.u32(8192).str(panicVersion)))
	if !raw.isClosed() {
		t.Error("panic in the message loop: connection still open")
	}
	logs.waitFor(t, "request=Tversion", 1)
	if n := logs.count(`msg="ninep: panic in the message loop; closing the connection"`); n != 1 {
		t.Errorf("%d message-loop panic lines, want 1:\n%s", n, &logs)
	}
	check()

	// A copied read: vfs.File.ReadAt calls the Observer.
	c = openRaw(t, "tcp", slowAddr, 1<<16, rootBig1)
	obs.set(vfs.OpRead)
	_, err = c.read(2, 0, 40000)
	obs.set()
	wantErrno(t, "copied read with a panicking Observer", err, syscall.EIO)
	if b, err := c.read(2, 0, 40000); err != nil || !bytes.Equal(b, files[rootBig1][:40000]) {
		t.Errorf("read after the panic: %d bytes, %v", len(b), err)
	}
}

// panicVersion is a Tversion version string whose refusal makes
// panicHandler panic.
const panicVersion = "9P-panic"

// panicHandler is a slog.Handler that panics on the log line of a refused
// Tversion of panicVersion, which the message loop writes.
type panicHandler struct{ slog.Handler }

func (h panicHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "ninep: refused version" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "version" && strings.Contains(a.Value.String(), panicVersion) {
				panic("injected: log line of a refused version")
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h panicHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return panicHandler{h.Handler.WithAttrs(as)}
}

func (h panicHandler) WithGroup(name string) slog.Handler {
	return panicHandler{h.Handler.WithGroup(name)}
}

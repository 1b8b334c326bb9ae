//go:build unix

package ninep_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
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

// pipeListener hands out one connection, then blocks until closed.
type pipeListener struct {
	conn   chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener(c net.Conn) *pipeListener {
	l := &pipeListener{conn: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conn <- c
	return l
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// panicSpotter is a slog.Handler that notes Error lines about panics: the
// server recovers them, the fuzzer must still see them.
type panicSpotter struct{ seen *atomic.Pointer[string] }

func (h panicSpotter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h panicSpotter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		s := b.String()
		h.seen.CompareAndSwap(nil, &s)
	}
	return nil
}
func (h panicSpotter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicSpotter) WithGroup(string) slog.Handler      { return h }

// fuzzSeeds are 9P byte streams for FuzzWire: a normal session and the
// hostile cases.
func fuzzSeeds() [][]byte {
	cat := func(ms ...[]byte) []byte {
		var b []byte
		for _, m := range ms {
			b = append(b, m...)
		}
		return b
	}
	version := frame(tversion, noTag, msg{}.u32(65536).str("9P2000.L"))
	attach := frame(tattach, 1, msg{}.u32(1).u32(noFid).str("nobody").str("").u32(noFid))
	session := cat(version, attach,
		frame(twalk, 2, walkBody(1, 2, []string{rootB})),
		frame(tgetattr, 3, msg{}.u32(2).u64(0x3fff)),
		frame(tlopen, 4, msg{}.u32(2).u32(0)),
		frame(tread, 5, msg{}.u32(2).u64(0).u32(4096)),
		frame(tread, 6, msg{}.u32(2).u64(100).u32(1<<20)),
		frame(txattrwalk, 7, msg{}.u32(2).u32(3).str(vfs.XattrBlobDigest)),
		frame(tread, 8, msg{}.u32(3).u64(0).u32(100)),
		frame(tclunk, 9, msg{}.u32(3)),
		frame(twalk, 10, walkBody(1, 4, []string{rootComplex, "keep"})),
		frame(tlopen, 11, msg{}.u32(4).u32(0)),
		frame(treaddir, 12, msg{}.u32(4).u64(0).u32(8192)),
		frame(treaddir, 13, msg{}.u32(4).u64(3).u32(30)),
		frame(tstatfs, 14, msg{}.u32(1)),
		frame(twalkget, 15, walkBody(4, 5, []string{".keep"})),
		frame(tflush, 16, msg{}.u16(5)),
		frame(tclunk, 17, msg{}.u32(2)),
		frame(tremove, 18, msg{}.u32(4)),
		frame(tclunk, 19, msg{}.u32(1)),
	)
	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = "d"
	}
	var exhaust []byte
	for i := range 80 {
		exhaust = append(exhaust, frame(twalk, uint16(i+2), walkBody(1, uint32(i+10), []string{rootComplex, "keep"}))...)
	}
	var reused []byte
	for range 4 {
		reused = append(reused, frame(tread, 9, msg{}.u32(2).u64(0).u32(60000))...)
	}
	return [][]byte{
		session,
		cat(version, attach, frame(twalk, 2, walkBody(1, 2, []string{rootB})), frame(tlopen, 3, msg{}.u32(2).u32(0)), reused),
		cat(version, attach, exhaust),
		cat(version, attach, frame(twalk, 2, walkBody(1, 2, seventeen))),
		cat(version, attach, frame(twalk, 2, msg{}.u32(1).u32(2).u16(0xFFFF))),
		cat(version, attach, frame(111, 2, msg{}.u16(0xFFFF)), frame(250, 3, nil)),
		cat(version, attach, frame(tread, 2, msg{}.u32(1).u64(0).u32(0xFFFFFFFF)), frame(treaddir, 3, msg{}.u32(1).u64(0).u32(0xFFFFFFFF))),
		cat(version, binary32(100<<20), []byte{tread, 1, 0}),
		cat(version, attach, frame(twrite, 2, msg{}.u32(1).u64(0).u32(4).append([]byte("data")))),
		cat(version, version),
		cat(attach, version),
		frame(tversion, noTag, msg{}.u32(8192).str("9P2000.u")),
		cat(version, frame(tattach, 1, msg{}.u32(1).u32(noFid).str("").str(strings.Repeat("a/", 40)).u32(0))),
		cat(version, attach, frame(twalk, 2, walkBody(1, 1, []string{rootComplex})), frame(tclunk, 3, msg{}.u32(1)), frame(twalk, 4, walkBody(1, 5, nil))),
		{3, 0, 0, 0, 100, 0, 0},
	}
}

// FuzzWire feeds a byte stream to a connection served over a socket pair and
// checks that the server neither panics (not even a recovered one) nor
// sends a malformed reply, and that it ends the connection and returns
// promptly once the client has gone.
func FuzzWire(f *testing.F) {
	seeds := fuzzSeeds()
	for _, s := range seeds {
		f.Add(s)
	}
	mem := memory.New()
	f.Cleanup(func() { mem.Close() })
	if err := storetest.NewFixtures().Fill(context.Background(), mem, storetest.FillOptions{}); err != nil {
		f.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	fsys, err := vfs.New(mem, vfs.Options{Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var seen atomic.Pointer[string]
		srv := ninep.New(fsys, ninep.Options{
			MaxMsize: 65536, MaxFids: 32, MaxServerFids: 48, MaxRequests: 8, MaxReadBytes: 1 << 17,
			WriteTimeout: time.Second, MessageTimeout: 100 * time.Millisecond,
			Logger: slog.New(panicSpotter{&seen}),
		})
		client, server := socketPair(t)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(context.Background(), newPipeListener(server)) }()
		read := make(chan error, 1)
		replies := 0
		go func() { read <- readReplies(client, &replies) }()
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in) // the server may close before taking it all
		client.CloseWrite()
		select {
		case err := <-read:
			if err != nil {
				t.Errorf("replies: %v", err)
			}
			if bytes.Equal(in, seeds[0]) && replies != 20 {
				t.Errorf("the normal session got %d replies, want 20", replies)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("replies still coming 5 s after the client closed")
		}
		closed := make(chan struct{})
		go func() {
			srv.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not return within 5 s")
		}
		client.Close()
		if err := <-served; err != nil && !errors.Is(err, ninep.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		if p := seen.Load(); p != nil {
			t.Fatalf("the server recovered a panic: %s", *p)
		}
	})
}

// socketPair returns a connected pair of unix sockets: like net.Pipe, but
// the client can close its writing side alone (the server reads EOF and
// still sends its replies), and the server's side is a real socket.
func socketPair(t *testing.T) (*net.UnixConn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]).(*net.UnixConn), conn(fds[1])
}

// readReplies reads replies until the connection ends and checks their
// framing.
func readReplies(c net.Conn, n *int) error {
	var hdr [7]byte
	for ; ; *n++ {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err // ErrUnexpectedEOF: a truncated header
		}
		size := binary.LittleEndian.Uint32(hdr[:])
		if size < 7 || size > 65536 {
			return errors.New("reply of a size outside [7, msize]")
		}
		if hdr[4]%2 != 1 {
			return errors.New("reply of a T type")
		}
		if _, err := io.CopyN(io.Discard, c, int64(size-7)); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("truncated reply")
			}
			return err
		}
	}
}

package sendfile

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// pair returns a connected TCP pair on loopback: the raw side to send on
// and the peer to read from.
func pair(t *testing.T) (syscall.RawConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw, p
}

func TestSend(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile is used on Linux only")
	}
	data := make([]byte, 3<<20) // more than a socket buffer: Send must wait
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	raw, peer := pair(t)
	head, tail := []byte("HEAD"), []byte{0, 0, 0}
	const off, n = 12345, 2<<20 + 17
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(head)+n+len(tail))))
		got <- b
	}()
	r := Send(raw, head, f, off, n, tail)
	if r.FileClosed || r.SocketErr != nil || r.FileErr != nil || r.Head != len(head) || r.Sent != n || r.Tail != len(tail) {
		t.Fatalf("Send: %+v", r)
	}
	want := append(append(append([]byte(nil), head...), data[off:off+n]...), tail...)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not the %d of head, range and tail", len(b), len(want))
	}

	// A range past the file's end: the head and what there is go out,
	// then the file error says it ended early.
	go io.Copy(io.Discard, peer)
	r = Send(raw, head, f, int64(len(data)-10), 100, tail)
	if !errors.Is(r.FileErr, io.ErrUnexpectedEOF) || r.Sent != 10 || r.Tail != 0 || !r.Started() || r.Unsupported() {
		t.Errorf("short file: %+v", r)
	}

	// A closed file: nothing goes out.
	f.Close()
	if r := Send(raw, head, f, 0, 10, nil); !r.FileClosed || r.Started() {
		t.Errorf("closed file: %+v", r)
	}
}

package server

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hugelgupf/p9/p9"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// The clients the frontends' own tests use, reduced to "read this file and
// tell me its inode number".

// nfsRead reads path (relative to the export root) over NFSv3 with
// go-nfs-client, MOUNT and NFS on the one port of addr, and returns its
// bytes and fileid.
func nfsRead(t testing.TB, addr, path string) ([]byte, uint64) {
	t.Helper()
	client, err := nfsDial(addr)
	if err != nil {
		t.Fatalf("nfs: dial %s: %v", addr, err)
	}
	defer client.Close()
	m := &nfsc.Mount{Client: client} // no Addr: NFS calls go over this connection
	target, err := m.Mount("/", rpc.NewAuthUnix("storefs-test", 0, 0).Auth())
	if err != nil {
		t.Fatalf("nfs: mount: %v", err)
	}
	attr, err := target.Getattr(path)
	if err != nil {
		t.Fatalf("nfs: getattr %s: %v", path, err)
	}
	f, err := target.Open(path)
	if err != nil {
		t.Fatalf("nfs: open %s: %v", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("nfs: read %s: %v", path, err)
	}
	return data, attr.Fileid
}

// nfsDial connects go-nfs-client to addr. The client binds a source port it
// picks at random from 49152-65535 instead of letting the kernel choose, so
// on a busy machine the bind can hit a port in use (EADDRINUSE, seen in CI);
// a few more tries pick other ports.
func nfsDial(addr string) (*rpc.Client, error) {
	var err error
	for range 8 {
		var c *rpc.Client
		if c, err = rpc.DialTCP("tcp", addr, false); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
	}
	return nil, err
}

// 9P message types the interop connection rewrites.
const (
	p9Tversion = 100
	p9Tattach  = 104
)

// interopConn makes github.com/hugelgupf/p9's client talk plain 9P2000.L,
// as protocols/ninep's tests do: its Tversion asks for "9P2000.L.Google.7"
// (rewritten to "9P2000.L") and its Tattach carries n_uname NoUID
// (rewritten to 0).
type interopConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte
}

func (c *interopConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, p...)
	for len(c.pending) >= 7 {
		size := int(binary.LittleEndian.Uint32(c.pending))
		if size < 7 || len(c.pending) < size {
			break
		}
		m := append([]byte(nil), c.pending[:size]...)
		switch m[4] {
		case p9Tversion: // size[4] type[1] tag[2] msize[4] version[s]
			const v = "9P2000.L"
			out := binary.LittleEndian.AppendUint32(nil, uint32(7+4+2+len(v)))
			out = append(out, p9Tversion)
			out = append(out, m[5:11]...) // tag, msize
			out = binary.LittleEndian.AppendUint16(out, uint16(len(v)))
			m = append(out, v...)
		case p9Tattach: // ... n_uname[4] last
			binary.LittleEndian.PutUint32(m[len(m)-4:], 0)
		}
		if _, err := c.Conn.Write(m); err != nil {
			return 0, err
		}
		c.pending = c.pending[size:]
	}
	return len(p), nil
}

// p9Read reads path over 9P2000.L (network "tcp" or "unix") with the p9
// client and returns its bytes and qid path.
func p9Read(t testing.TB, network, addr, path string) ([]byte, uint64) {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatalf("9p: dial %s: %v", addr, err)
	}
	c, err := p9.NewClient(&interopConn{Conn: conn}, p9.WithMessageSize(64<<10))
	if err != nil {
		conn.Close()
		t.Fatalf("9p: version: %v", err)
	}
	defer c.Close()
	root, err := c.Attach("")
	if err != nil {
		t.Fatalf("9p: attach: %v", err)
	}
	defer root.Close()
	_, f, err := root.Walk(strings.Split(path, "/"))
	if err != nil {
		t.Fatalf("9p: walk %s: %v", path, err)
	}
	defer f.Close()
	qid, _, _, err := f.GetAttr(p9.AttrMaskAll)
	if err != nil {
		t.Fatalf("9p: getattr %s: %v", path, err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("9p: open %s: %v", path, err)
	}
	var data []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := f.ReadAt(buf, int64(len(data)))
		data = append(data, buf[:n]...)
		if n == 0 || errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("9p: read %s: %v", path, err)
		}
	}
	return data, qid.Path
}

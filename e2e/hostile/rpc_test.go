package hostile_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A raw ONC RPC client over TCP (RFC 5531 record marking): calls are built
// by hand so that a test can send anything.

const (
	progNFS   = 100003
	progMount = 100005

	procMnt         = 1
	procExport      = 5
	procGetattr     = 1
	procReaddir     = 16
	procReaddirplus = 17

	nfs3OK     = 0
	nfs3Stale  = 70
	nfs3TooSml = 10005
)

// xdr builds XDR-encoded bytes.
type xdr []byte

func (b xdr) u32(v uint32) xdr { return binary.BigEndian.AppendUint32(b, v) }
func (b xdr) u64(v uint64) xdr { return binary.BigEndian.AppendUint64(b, v) }
func (b xdr) opaque(p []byte) xdr {
	b = b.u32(uint32(len(p)))
	b = append(b, p...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// callRecord returns one whole record: the record mark and an RPC call
// with AUTH_NONE credentials, followed by args.
func callRecord(xid, prog, vers, proc uint32, args []byte) []byte {
	body := xdr(nil).u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc).
		u32(0).u32(0). // cred AUTH_NONE
		u32(0).u32(0)  // verf AUTH_NONE
	body = append(body, args...)
	return append(xdr(nil).u32(0x80000000|uint32(len(body))), body...)
}

// rpcConn is one client connection.
type rpcConn struct {
	net.Conn
	xid uint32
}

func dialRPC(addr string) (*rpcConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rpcConn{Conn: c}, nil
}

// errClosed means the server closed the connection instead of replying.
var errClosed = errors.New("connection closed by the server")

// call sends a call and returns the reply's result body (after the
// accepted-reply header), or an error: errClosed, a timeout, or a
// non-SUCCESS accept status.
func (c *rpcConn) call(prog, vers, proc uint32, args []byte, timeout time.Duration) ([]byte, error) {
	c.xid++
	return c.send(callRecord(c.xid, prog, vers, proc, args), timeout)
}

// send writes raw bytes and reads one reply record.
func (c *rpcConn) send(raw []byte, timeout time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	rec, err := c.readRecord()
	if err != nil {
		return nil, err
	}
	return acceptedBody(rec)
}

// readRecord reads one reply record.
func (c *rpcConn) readRecord() ([]byte, error) {
	var rec []byte
	for {
		var mark [4]byte
		if _, err := io.ReadFull(c, mark[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return nil, errClosed
			}
			return nil, err
		}
		m := binary.BigEndian.Uint32(mark[:])
		if m&0x7fffffff > 4<<20 {
			return nil, fmt.Errorf("reply fragment of %d bytes", m&0x7fffffff)
		}
		frag := make([]byte, m&0x7fffffff)
		if _, err := io.ReadFull(c, frag); err != nil {
			return nil, err
		}
		rec = append(rec, frag...)
		if m&0x80000000 != 0 {
			return rec, nil
		}
	}
}

// acceptedBody returns the result body of a reply record (after the
// accepted-reply header), or an error for a denied call or an accept
// status other than SUCCESS.
func acceptedBody(rec []byte) ([]byte, error) {
	// xid, REPLY, MSG_ACCEPTED, verf (flavor, length, body), accept stat
	if len(rec) < 24 {
		return nil, fmt.Errorf("reply of %d bytes", len(rec))
	}
	if stat := binary.BigEndian.Uint32(rec[8:]); stat != 0 {
		return nil, fmt.Errorf("call denied (reply_stat %d)", stat)
	}
	vlen := binary.BigEndian.Uint32(rec[16:])
	off := 20 + int(vlen+3)&^3
	if len(rec) < off+4 {
		return nil, fmt.Errorf("short reply")
	}
	if as := binary.BigEndian.Uint32(rec[off:]); as != 0 {
		return nil, fmt.Errorf("accept_stat %d", as)
	}
	return rec[off+4:], nil
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// mountRoot mounts "/" and returns the root file handle.
func (c *rpcConn) mountRoot() ([]byte, error) {
	body, err := c.call(progMount, 3, procMnt, xdr(nil).opaque([]byte("/")), 5*time.Second)
	if err != nil {
		return nil, err
	}
	if len(body) < 8 || binary.BigEndian.Uint32(body) != 0 {
		return nil, fmt.Errorf("MNT / failed: %x", body)
	}
	n := binary.BigEndian.Uint32(body[4:])
	if n > 64 || len(body) < 8+int(n) {
		return nil, fmt.Errorf("MNT / reply with a %d-byte handle", n)
	}
	return body[8 : 8+n], nil
}

// status returns the nfsstat3 at the start of an NFS result.
func status(body []byte) uint32 {
	if len(body) < 4 {
		return 0xffffffff
	}
	return binary.BigEndian.Uint32(body)
}

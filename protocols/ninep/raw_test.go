package ninep_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

// 9P2000.L message types used by the raw client.
const (
	rlerror    = 7
	tstatfs    = 8
	tlopen     = 12
	tlcreate   = 14
	tgetattr   = 24
	tsetattr   = 26
	txattrwalk = 30
	txattrcrt  = 32
	treaddir   = 40
	tmkdir     = 72
	tunlinkat  = 76
	tversion   = 100
	tauth      = 102
	tattach    = 104
	tflush     = 108
	twalk      = 110
	tread      = 116
	twrite     = 118
	tclunk     = 120
	tremove    = 122
	twalkget   = 126 // p9's Twalkgetattr
	noFid      = ^uint32(0)
	noTag      = 0xFFFF
)

// msg builds a 9P message body.
type msg []byte

func (m msg) u8(v uint8) msg      { return append(m, v) }
func (m msg) u16(v uint16) msg    { return binary.LittleEndian.AppendUint16(m, v) }
func (m msg) u32(v uint32) msg    { return binary.LittleEndian.AppendUint32(m, v) }
func (m msg) u64(v uint64) msg    { return binary.LittleEndian.AppendUint64(m, v) }
func (m msg) str(s string) msg    { return append(m.u16(uint16(len(s))), s...) }
func (m msg) append(b []byte) msg { return append(m, b...) }

// frame returns the whole message: size[4] type[1] tag[2] body.
func frame(typ uint8, tag uint16, body msg) []byte {
	f := binary.LittleEndian.AppendUint32(nil, uint32(7+len(body)))
	f = append(f, typ)
	f = binary.LittleEndian.AppendUint16(f, tag)
	return append(f, body...)
}

// reply reads a reply body.
type reply struct{ b []byte }

func (r *reply) u8() uint8 {
	if len(r.b) < 1 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reply) u16() uint16 {
	if len(r.b) < 2 {
		r.b = nil
		return 0
	}
	v := binary.LittleEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reply) u32() uint32 {
	if len(r.b) < 4 {
		r.b = nil
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reply) u64() uint64 {
	lo, hi := r.u32(), r.u32()
	return uint64(hi)<<32 | uint64(lo)
}

func (r *reply) str() string {
	n := int(r.u16())
	n = min(n, len(r.b))
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// rawConn speaks 9P message by message, as a hostile or a kernel client
// would; one request at a time.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	tag  uint16
}

func dialRaw(t testing.TB, network, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, conn: c}
}

// send writes raw bytes.
func (c *rawConn) send(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

// recv reads one reply.
func (c *rawConn) recv() (typ uint8, tag uint16, body []byte, err error) {
	var hdr [7]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size < 7 || size > 16<<20 {
		return 0, 0, nil, fmt.Errorf("reply size %d", size)
	}
	body = make([]byte, size-7)
	if _, err := io.ReadFull(c.conn, body); err != nil {
		return 0, 0, nil, err
	}
	return hdr[4], binary.LittleEndian.Uint16(hdr[5:]), body, nil
}

// errno is an Rlerror's errno as an error.
type errno = syscall.Errno

// call sends one request and returns its reply body; an Rlerror is a
// syscall.Errno.
func (c *rawConn) call(typ uint8, body msg) (*reply, error) {
	c.tag++
	if c.tag == noTag {
		c.tag = 1
	}
	tag := c.tag
	if typ == tversion {
		tag = noTag
	}
	if err := c.send(frame(typ, tag, body)); err != nil {
		return nil, err
	}
	rtyp, rtag, rbody, err := c.recv()
	if err != nil {
		return nil, err
	}
	if rtag != tag {
		return nil, fmt.Errorf("reply tag %d to request tag %d", rtag, tag)
	}
	if rtyp == rlerror {
		return nil, errno(binary.LittleEndian.Uint32(rbody))
	}
	if rtyp != typ+1 {
		return nil, fmt.Errorf("reply type %d to request type %d", rtyp, typ)
	}
	return &reply{rbody}, nil
}

func (c *rawConn) version(msize uint32, v string) (uint32, string, error) {
	r, err := c.call(tversion, msg{}.u32(msize).str(v))
	if err != nil {
		return 0, "", err
	}
	return r.u32(), r.str(), nil
}

func (c *rawConn) mustVersion(msize uint32) uint32 {
	c.t.Helper()
	got, v, err := c.version(msize, "9P2000.L")
	if err != nil || v != "9P2000.L" {
		c.t.Fatalf("Tversion: %q, %v", v, err)
	}
	return got
}

func (c *rawConn) attach(fid uint32, uname, aname string, nuname uint32) (qid, error) {
	r, err := c.call(tattach, msg{}.u32(fid).u32(noFid).str(uname).str(aname).u32(nuname))
	if err != nil {
		return qid{}, err
	}
	return r.qid(), nil
}

func (c *rawConn) walk(fid, newfid uint32, names ...string) ([]qid, error) {
	r, err := c.call(twalk, walkBody(fid, newfid, names))
	if err != nil {
		return nil, err
	}
	qs := make([]qid, r.u16())
	for i := range qs {
		qs[i] = r.qid()
	}
	return qs, nil
}

// walkgetattr sends p9's Twalkgetattr (a Twalk whose reply also carries
// the result's attributes), which the server serves under 9P2000.L.
func (c *rawConn) walkgetattr(fid, newfid uint32, names ...string) error {
	_, err := c.call(twalkget, walkBody(fid, newfid, names))
	return err
}

// walkBody is the body of Twalk and Twalkgetattr.
func walkBody(fid, newfid uint32, names []string) msg {
	m := msg{}.u32(fid).u32(newfid).u16(uint16(len(names)))
	for _, n := range names {
		m = m.str(n)
	}
	return m
}

func (c *rawConn) clunk(fid uint32) error {
	_, err := c.call(tclunk, msg{}.u32(fid))
	return err
}

func (c *rawConn) lopen(fid, flags uint32) (qid, uint32, error) {
	r, err := c.call(tlopen, msg{}.u32(fid).u32(flags))
	if err != nil {
		return qid{}, 0, err
	}
	return r.qid(), r.u32(), nil
}

func (c *rawConn) read(fid uint32, off uint64, count uint32) ([]byte, error) {
	r, err := c.call(tread, msg{}.u32(fid).u64(off).u32(count))
	if err != nil {
		return nil, err
	}
	n := r.u32()
	if int(n) != len(r.b) {
		return nil, fmt.Errorf("Rread count %d with %d bytes", n, len(r.b))
	}
	return r.b, nil
}

// dirent is one Rreaddir entry.
type dirent struct {
	qid    qid
	offset uint64
	typ    uint8
	name   string
}

func (c *rawConn) readdir(fid uint32, off uint64, count uint32) ([]dirent, int, error) {
	r, err := c.call(treaddir, msg{}.u32(fid).u64(off).u32(count))
	if err != nil {
		return nil, 0, err
	}
	n := int(r.u32())
	if n != len(r.b) {
		return nil, 0, fmt.Errorf("Rreaddir count %d with %d bytes", n, len(r.b))
	}
	var out []dirent
	for len(r.b) > 0 {
		out = append(out, dirent{qid: r.qid(), offset: r.u64(), typ: r.u8(), name: r.str()})
	}
	return out, n, nil
}

// getattr returns the qid, mode, size and nlink of a fid.
func (c *rawConn) getattr(fid uint32) (qid, uint32, uint64, error) {
	r, err := c.call(tgetattr, msg{}.u32(fid).u64(0x3fff))
	if err != nil {
		return qid{}, 0, 0, err
	}
	r.u64() // valid
	q := r.qid()
	mode := r.u32()
	r.u32() // uid
	r.u32() // gid
	r.u64() // nlink
	r.u64() // rdev
	size := r.u64()
	return q, mode, size, nil
}

// xattr reads an extended attribute as Linux does: Txattrwalk, then Tread
// of its size, then Tclunk.
func (c *rawConn) xattr(fid, newfid uint32, name string) ([]byte, error) {
	r, err := c.call(txattrwalk, msg{}.u32(fid).u32(newfid).str(name))
	if err != nil {
		return nil, err
	}
	size := r.u64()
	defer c.clunk(newfid)
	if size == 0 {
		return []byte{}, nil
	}
	return c.read(newfid, 0, uint32(size))
}

// qid is a 9P qid.
type qid struct {
	typ     uint8
	version uint32
	path    uint64
}

func (r *reply) qid() qid { return qid{typ: r.u8(), version: r.u32(), path: r.u64()} }

// isClosed reports whether the server closed the connection (a read gets
// EOF or a reset), after draining whatever replies it sent.
func (c *rawConn) isClosed() bool {
	for {
		_, _, _, err := c.recv()
		if err != nil {
			return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
		}
	}
}

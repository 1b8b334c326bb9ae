package kernel_test

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
)

// ONC RPC and NFSv3 numbers the tap looks at (RFC 5531, RFC 1813).
const (
	progNFS    = 100003
	progMount  = 100005
	progNFSACL = 100227

	acceptProgUnavail = 1

	nfsProcSetattr     = 2
	nfsProcAccess      = 4
	nfsProcCreate      = 8
	nfsProcMkdir       = 9
	nfsProcSymlink     = 10
	nfsProcRemove      = 12
	nfsProcRename      = 14
	nfsProcReaddir     = 16
	nfsProcReaddirplus = 17

	nfs3ErrPerm = 1
	nfs3ErrROFS = 30

	access3Modify = 0x04
	access3Extend = 0x08
	access3Delete = 0x10
)

// rpcCall is one RPC call the tap saw and, once it came, its reply.
type rpcCall struct {
	Prog, Vers, Proc uint32
	Replied          bool
	Accepted         bool   // reply_stat MSG_ACCEPTED
	AcceptStat       uint32 // SUCCESS, PROG_UNAVAIL, …
	Results          []byte // the start of the procedure's results
}

// rpcTap is a net.Listener whose connections record the RPC calls a
// client sends and the server's replies, so that a test can check what the
// kernel client asked and what it was told without touching the server.
type rpcTap struct {
	net.Listener

	mu    sync.Mutex
	calls []*rpcCall
}

// Accept wraps the next connection.
func (l *rpcTap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &tapConn{Conn: c, tap: l, pending: map[uint32]*rpcCall{}}
	tc.in.onRecord = tc.call
	tc.out.onRecord = tc.reply
	return tc, nil
}

// Calls returns a copy of every call seen so far.
func (l *rpcTap) Calls() []rpcCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]rpcCall, len(l.calls))
	for i, c := range l.calls {
		out[i] = *c
	}
	return out
}

// tapConn is one tapped connection: Read carries calls, Write replies.
type tapConn struct {
	net.Conn
	tap *rpcTap

	inMu, outMu sync.Mutex // the server may read and write from different goroutines
	in, out     recordParser
	pending     map[uint32]*rpcCall // by xid; guarded by tap.mu
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.inMu.Lock()
	defer c.inMu.Unlock()
	c.in.feed(b[:n])
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.outMu.Lock()
	defer c.outMu.Unlock()
	c.out.feed(b[:n])
	return n, err
}

// call records a call record: xid, CALL, rpcvers, prog, vers, proc.
func (c *tapConn) call(rec []byte) {
	if len(rec) < 24 || binary.BigEndian.Uint32(rec[4:]) != 0 {
		return
	}
	xid := binary.BigEndian.Uint32(rec)
	rc := &rpcCall{Prog: binary.BigEndian.Uint32(rec[12:]), Vers: binary.BigEndian.Uint32(rec[16:]),
		Proc: binary.BigEndian.Uint32(rec[20:])}
	c.tap.mu.Lock()
	defer c.tap.mu.Unlock()
	c.tap.calls = append(c.tap.calls, rc)
	c.pending[xid] = rc
}

// reply records a reply record: xid, REPLY, reply_stat, then for an
// accepted reply the verifier, accept_stat and the results.
func (c *tapConn) reply(rec []byte) {
	if len(rec) < 12 || binary.BigEndian.Uint32(rec[4:]) != 1 {
		return
	}
	xid := binary.BigEndian.Uint32(rec)
	c.tap.mu.Lock()
	defer c.tap.mu.Unlock()
	rc, ok := c.pending[xid]
	if !ok {
		return
	}
	delete(c.pending, xid)
	rc.Replied = true
	if binary.BigEndian.Uint32(rec[8:]) != 0 || len(rec) < 20 {
		return // MSG_DENIED
	}
	verfLen := int(binary.BigEndian.Uint32(rec[16:]))
	off := 20 + (verfLen+3)&^3
	if off+4 > len(rec) {
		return
	}
	rc.Accepted = true
	rc.AcceptStat = binary.BigEndian.Uint32(rec[off:])
	rc.Results = append([]byte(nil), rec[off+4:]...)
}

// maxRecordPrefix is how much of each record the tap keeps: enough for an
// ACCESS reply (status, post_op_attr, access).
const maxRecordPrefix = 256

// recordParser follows RFC 5531 record marking in one direction of a
// stream and hands the start of each complete record to onRecord.
type recordParser struct {
	hdr      [4]byte
	nhdr     int    // bytes of the fragment header read so far
	left     uint32 // bytes left in the current fragment
	last     bool   // the current fragment ends its record
	buf      []byte // the record's first bytes
	onRecord func(rec []byte)
}

func (p *recordParser) feed(b []byte) {
	for len(b) > 0 {
		if p.nhdr < 4 {
			n := copy(p.hdr[p.nhdr:], b)
			p.nhdr += n
			b = b[n:]
			if p.nhdr < 4 {
				return
			}
			v := binary.BigEndian.Uint32(p.hdr[:])
			p.last, p.left = v&(1<<31) != 0, v&^(1<<31)
			if p.left == 0 {
				p.fragmentDone()
			}
			continue
		}
		n := min(len(b), int(p.left))
		if room := maxRecordPrefix - len(p.buf); room > 0 {
			p.buf = append(p.buf, b[:min(n, room)]...)
		}
		p.left -= uint32(n)
		b = b[n:]
		if p.left == 0 {
			p.fragmentDone()
		}
	}
}

func (p *recordParser) fragmentDone() {
	p.nhdr = 0
	if p.last {
		p.onRecord(p.buf)
		p.buf = p.buf[:0]
	}
}

// TestRecordParser feeds records split across fragments and writes one
// byte at a time.
func TestRecordParser(t *testing.T) {
	var got [][]byte
	p := recordParser{onRecord: func(rec []byte) { got = append(got, append([]byte(nil), rec...)) }}
	frag := func(last bool, data string) []byte {
		v := uint32(len(data))
		if last {
			v |= 1 << 31
		}
		return append(binary.BigEndian.AppendUint32(nil, v), data...)
	}
	var stream []byte
	stream = append(stream, frag(true, "one")...)
	stream = append(stream, frag(false, "tw")...)
	stream = append(stream, frag(false, "")...)
	stream = append(stream, frag(true, "o")...)
	stream = append(stream, frag(true, string(make([]byte, 2*maxRecordPrefix)))...)
	stream = append(stream, frag(true, "three")...)
	for i := range stream {
		p.feed(stream[i : i+1])
	}
	want := []string{"one", "two", string(make([]byte, maxRecordPrefix)), "three"}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("record %d = %q, want %q", i, got[i], want[i])
		}
	}
}

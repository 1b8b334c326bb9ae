package kernel_test

import (
	"encoding/binary"
	"net"
	pathpkg "path"
	"sync"
	"testing"
)

// 9P2000.L message types the tap follows.
const (
	tattach = 104
	rattach = 105
	twalk   = 110
	rwalk   = 111
)

// ninepTap is a net.Listener whose connections record the qid.path the
// server gave each path a client walked to (from Tattach/Rattach and
// Twalk/Rwalk), so that a test can compare qid.path itself with vfs
// without a 9P client of its own.
type ninepTap struct {
	net.Listener

	mu   sync.Mutex
	qids map[string]uint64 // clean path below the attach point → qid.path
}

// Accept wraps the next connection.
func (l *ninepTap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &ninepConn{Conn: c, tap: l, fids: map[uint32]string{}, walks: map[uint16]pendingWalk{}}
	tc.in.onMessage = tc.request
	tc.out.onMessage = tc.response
	return tc, nil
}

// QIDPath returns the qid.path the server sent for p ("/" is the attach
// point), and whether a client walked there.
func (l *ninepTap) QIDPath(p string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q, ok := l.qids[p]
	return q, ok
}

type pendingWalk struct {
	from  string // the path of fid; "" for an attach
	names []string
	fid   uint32 // newfid, or the attach's fid
}

// ninepConn is one tapped connection: Read carries requests, Write
// responses.
type ninepConn struct {
	net.Conn
	tap *ninepTap

	inMu, outMu sync.Mutex
	in, out     messageParser

	mu    sync.Mutex
	fids  map[uint32]string // the path each fid was walked to
	walks map[uint16]pendingWalk
}

func (c *ninepConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.inMu.Lock()
	defer c.inMu.Unlock()
	c.in.feed(b[:n])
	return n, err
}

func (c *ninepConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.outMu.Lock()
	defer c.outMu.Unlock()
	c.out.feed(b[:n])
	return n, err
}

// request notes Tattach and Twalk by tag.
func (c *ninepConn) request(typ uint8, tag uint16, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch typ {
	case tattach: // fid[4] afid[4] uname[s] aname[s] n_uname[4]
		if len(body) >= 4 {
			c.walks[tag] = pendingWalk{fid: binary.LittleEndian.Uint32(body)}
		}
	case twalk: // fid[4] newfid[4] nwname[2] nwname*wname[s]
		if len(body) < 10 {
			return
		}
		from, ok := c.fids[binary.LittleEndian.Uint32(body)]
		if !ok {
			return
		}
		w := pendingWalk{from: from, fid: binary.LittleEndian.Uint32(body[4:])}
		n := int(binary.LittleEndian.Uint16(body[8:]))
		rest := body[10:]
		for range n {
			if len(rest) < 2 {
				return
			}
			l := int(binary.LittleEndian.Uint16(rest))
			if len(rest) < 2+l {
				return
			}
			w.names = append(w.names, string(rest[2:2+l]))
			rest = rest[2+l:]
		}
		c.walks[tag] = w
	}
}

// response records the qids of Rattach and Rwalk; any other response to
// a pending tag (Rlerror) ends it.
func (c *ninepConn) response(typ uint8, tag uint16, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.walks[tag]
	if !ok {
		return
	}
	delete(c.walks, tag)
	qidPath := func(q []byte) uint64 { return binary.LittleEndian.Uint64(q[5:]) } // type[1] version[4] path[8]
	switch typ {
	case rattach:
		if len(body) >= 13 {
			c.fids[w.fid] = "/"
			c.record("/", qidPath(body))
		}
	case rwalk: // nwqid[2] nwqid*qid[13]
		if len(body) < 2 {
			return
		}
		n := int(binary.LittleEndian.Uint16(body))
		if n > len(w.names) || len(body) < 2+13*n {
			return
		}
		p := w.from
		for i := range n {
			p = pathpkg.Join(p, w.names[i])
			c.record(p, qidPath(body[2+13*i:]))
		}
		if n == len(w.names) {
			c.fids[w.fid] = p
		}
	}
}

func (c *ninepConn) record(p string, qid uint64) {
	c.tap.mu.Lock()
	defer c.tap.mu.Unlock()
	if c.tap.qids == nil {
		c.tap.qids = map[string]uint64{}
	}
	c.tap.qids[p] = qid
}

// maxMessagePrefix is how much of each 9P message the tap keeps: a Twalk
// of 16 names of 255 bytes fits.
const maxMessagePrefix = 8 << 10

// messageParser splits one direction of a 9P stream (size[4] type[1]
// tag[2] body, little endian) and hands each message's type, tag and the
// start of its body to onMessage.
type messageParser struct {
	hdr       [7]byte
	nhdr      int
	left      int // body bytes left in the current message
	buf       []byte
	onMessage func(typ uint8, tag uint16, body []byte)
}

func (p *messageParser) feed(b []byte) {
	for len(b) > 0 {
		if p.nhdr < len(p.hdr) {
			n := copy(p.hdr[p.nhdr:], b)
			p.nhdr += n
			b = b[n:]
			if p.nhdr < len(p.hdr) {
				return
			}
			p.left = max(int(binary.LittleEndian.Uint32(p.hdr[:]))-len(p.hdr), 0)
			if p.left == 0 {
				p.done()
			}
			continue
		}
		n := min(len(b), p.left)
		if room := maxMessagePrefix - len(p.buf); room > 0 {
			p.buf = append(p.buf, b[:min(n, room)]...)
		}
		p.left -= n
		b = b[n:]
		if p.left == 0 {
			p.done()
		}
	}
}

func (p *messageParser) done() {
	p.onMessage(p.hdr[4], binary.LittleEndian.Uint16(p.hdr[5:]), p.buf)
	p.nhdr = 0
	p.buf = p.buf[:0]
}

// TestMessageParser feeds a Tattach/Rattach and a two-name Twalk/Rwalk one
// byte at a time through a tapped connection's parsers.
func TestMessageParser(t *testing.T) {
	tap := &ninepTap{}
	c := &ninepConn{tap: tap, fids: map[uint32]string{}, walks: map[uint16]pendingWalk{}}
	c.in.onMessage, c.out.onMessage = c.request, c.response
	msg := func(typ uint8, tag uint16, body []byte) []byte {
		m := binary.LittleEndian.AppendUint32(nil, uint32(7+len(body)))
		m = append(m, typ)
		m = binary.LittleEndian.AppendUint16(m, tag)
		return append(m, body...)
	}
	str := func(b []byte, s string) []byte {
		return append(binary.LittleEndian.AppendUint16(b, uint16(len(s))), s...)
	}
	qid := func(b []byte, path uint64) []byte {
		return binary.LittleEndian.AppendUint64(append(b, 0x80, 0, 0, 0, 0), path)
	}
	walk := binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 0), 1), 2)
	// A request, its response, the next request, its response: a walk
	// from fid 0 needs fid 0 attached first.
	for i, m := range [][]byte{
		msg(tattach, 1, binary.LittleEndian.AppendUint32(str(str(binary.LittleEndian.AppendUint32(
			binary.LittleEndian.AppendUint32(nil, 0), ^uint32(0)), "nobody"), ""), ^uint32(0))),
		msg(rattach, 1, qid(nil, 1)),
		msg(twalk, 2, str(str(walk, "a"), "b")),
		msg(rwalk, 2, qid(qid(binary.LittleEndian.AppendUint16(nil, 2), 40), 41)),
	} {
		p := &c.in
		if i%2 == 1 {
			p = &c.out
		}
		for j := range m {
			p.feed(m[j : j+1])
		}
	}
	for p, want := range map[string]uint64{"/": 1, "/a": 40, "/a/b": 41} {
		if got, ok := tap.QIDPath(p); !ok || got != want {
			t.Errorf("qid.path of %s = %d (%v), want %d", p, got, ok, want)
		}
	}
	if c.fids[1] != "/a/b" {
		t.Errorf("fid 1 is at %q, want /a/b", c.fids[1])
	}
}

package ninep

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/storefs/storefs/internal/clientstr"
	"github.com/storefs/storefs/internal/netguard"
)

// errProtocol is the cause of a connection closed for a protocol violation.
var errProtocol = errors.New("9P protocol violation")

// errLoopPanic is the cause of a connection closed after a panic in the
// message loop.
var errLoopPanic = errors.New("panic in the 9P message loop")

// request is one decoded request.
type request struct {
	typ    uint8
	tag    uint16
	fid    uint32
	newFid uint32
	names  []string // Twalk, Twalkgetattr
	name   string   // Txattrwalk: the attribute; Tattach: the aname
	off    uint64   // Tread, Treaddir
	count  uint32   // Tread, Treaddir: clamped to msize-11
	flags  uint32   // Tlopen
	oldTag uint16   // Tflush
}

// call is a request being handled in its own goroutine.
type call struct {
	cancel context.CancelFunc
	done   chan struct{} // closed once its reply is sent
}

// conn is one 9P connection: a loop that reads, checks and decodes each
// request (serve), handlers that answer it from vfs (ops.go), and replies
// written one whole message at a time under wmu.
//
// Requests that never wait on the store (Tgetattr, Tstatfs, Treadlink,
// Tclunk, a Tread of a local file, …) are answered by the loop itself,
// before it reads the next;
// the others each get a goroutine, at most Options.MaxRequests of them,
// Treads and Treaddirs at most Options.MaxReadBytes/msize: the loop reads
// no further until one is answered.
type conn struct {
	srv    *Server
	nc     net.Conn
	raw    syscall.RawConn // nc's socket, for sendfile; nil: copy every read
	br     *bufio.Reader
	log    *slog.Logger
	panics panicLog
	ctx    context.Context // done when the connection ends or the server stops

	msize     uint32        // 0 before Tversion; set once by the loop before any handler starts
	slots     chan struct{} // one per request handled in a goroutine
	readSlots chan struct{} // one per Tread or Treaddir in flight; made at Tversion
	bufs      chan []byte   // free read buffers of msize-11 bytes
	rbuf      []byte        // the loop's buffer for requests up to keptFrame
	handlers  sync.WaitGroup

	noSendfile atomic.Bool // sendfile failed on this connection: reads are copied
	sendFailed atomic.Bool // a reply could not be sent: the connection is closing
	done       chan struct{}
	closeOnce  sync.Once
	wmu        sync.Mutex // one reply at a time

	mu             sync.Mutex // the fields below
	inflight       map[uint16]*call
	fids           map[uint32]*fid
	entries        int // walk-path entries held by the connection's fids
	fidLimitLogged bool
}

func newConn(srv *Server, nc net.Conn) *conn {
	c := &conn{
		srv:      srv,
		nc:       nc,
		br:       bufio.NewReaderSize(nc, 64<<10),
		log:      srv.log.With("client", nc.RemoteAddr().String()),
		slots:    make(chan struct{}, srv.opts.MaxRequests),
		done:     make(chan struct{}),
		inflight: make(map[uint16]*call),
		fids:     make(map[uint32]*fid),
	}
	c.panics.logger = c.log
	if !srv.opts.NoSendfile {
		c.initSendfile()
	}
	return c
}

// Close closes the connection; it may be called more than once.
func (c *conn) Close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// serve serves the connection until it ends or ctx is done, and returns
// once every handler has returned and every fid is released.
func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	c.ctx = ctx
	stop := context.AfterFunc(ctx, c.Close)
	defer func() {
		stop()
		c.Close()
		cancel()
		c.handlers.Wait()
		c.releaseAll()
	}()
	for {
		err := c.next()
		if err == nil {
			continue
		}
		if errors.Is(err, errProtocol) || errors.Is(err, errLoopPanic) {
			return
		}
		// The client stopped sending (or the connection failed): the
		// requests in flight still get their replies if it reads them.
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("ninep: connection ends", "err", err)
		}
		c.handlers.Wait()
		return
	}
}

// next reads and handles one message. An error ends the connection.
func (c *conn) next() (err error) {
	typ := uint8(0)
	defer func() {
		if v := recover(); v != nil {
			c.panics.log("ninep: panic in the message loop; closing the connection", msgName(typ), v)
			err = fmt.Errorf("%w: %s", errLoopPanic, clientstr.Quote(fmt.Sprint(v)))
		}
	}()
	// Wait as long as it takes for a message to start (an idle mount is
	// fine), then for the rest of it no longer than MessageTimeout: a
	// connection stalled in the middle of a message is broken or
	// hostile. The deadline is set only when the message is not already
	// buffered, and cleared after.
	if _, err := c.br.Peek(1); err != nil {
		return err
	}
	timed := false
	if c.br.Buffered() < headerSize {
		c.setReadDeadline()
		timed = true
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return c.readFailed(err, 0, headerSize)
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	typ = hdr[4]
	tag := binary.LittleEndian.Uint16(hdr[5:])
	limit := c.msize
	if limit == 0 {
		limit = preVersion
	}
	if size < headerSize || size > limit {
		return c.violation("message of %d bytes (type %d), limit %d", size, typ, limit)
	}
	if op, ok := writeRequests[typ]; ok && c.msize != 0 {
		// Refused whatever it holds: its body (a Twrite's data, up to
		// msize) is skipped, not buffered.
		if _, err := c.br.Discard(int(size) - headerSize); err != nil {
			return c.readFailed(err, typ, int(size))
		}
		if err := c.clearReadDeadline(timed); err != nil {
			return err
		}
		netguard.Active(c.nc)
		if err := c.checkTag(tag); err != nil {
			return err
		}
		return c.send(rlerror(tag, refusal(op)))
	}
	var frame []byte
	if size <= keptFrame {
		if c.rbuf == nil {
			c.rbuf = make([]byte, keptFrame)
		}
		frame = c.rbuf[:size-headerSize]
	} else {
		// Only a hostile client sends large requests (a Twalk of 16 long
		// names): not kept for the next message.
		frame = make([]byte, size-headerSize)
	}
	if !timed && c.br.Buffered() < len(frame) {
		c.setReadDeadline()
		timed = true
	}
	if _, err := io.ReadFull(c.br, frame); err != nil {
		return c.readFailed(err, typ, int(size))
	}
	if err := c.clearReadDeadline(timed); err != nil {
		return err
	}
	netguard.Active(c.nc)
	return c.dispatch(typ, tag, frame)
}

// dispatch decodes one request and answers it or hands it to a handler.
func (c *conn) dispatch(typ uint8, tag uint16, body []byte) error {
	d := &decoder{b: body}
	if typ == tTversion {
		return c.version(tag, d)
	}
	if c.msize == 0 {
		return c.violation("request type %d before Tversion", typ)
	}
	if err := c.checkTag(tag); err != nil {
		return err
	}
	switch {
	case typ == tTauth:
		return c.send(rlerror(tag, errNoAuth))
	case !served[typ]:
		// Answered without decoding the body: nothing is sized from
		// what a client sends in a message the server does not serve.
		return c.send(rlerror(tag, unservedErrno(typ)))
	}
	r := &request{typ: typ, tag: tag, newFid: noFid}
	switch typ {
	case tTattach:
		r.newFid = d.u32()
		d.u32() // afid
		uname, aname := d.bytes(), d.bytes()
		d.u32() // n_uname
		if !d.bad && (len(uname) > maxPath || len(aname) > maxPath) {
			return c.send(rlerror(tag, errNameTooLong))
		}
		r.name = string(aname)
	case tTwalk, tTwalkgetattr:
		r.fid, r.newFid = d.u32(), d.u32()
		n := int(d.u16())
		if n > maxWalkNames && !d.bad {
			return c.send(rlerror(tag, errTooManyNames))
		}
		r.names = make([]string, 0, n)
		for range n {
			r.names = append(r.names, string(d.bytes()))
		}
	case tTxattrwalk:
		r.fid, r.newFid = d.u32(), d.u32()
		r.name = string(d.bytes())
	case tTread, tTreaddir:
		r.fid, r.off, r.count = d.u32(), d.u64(), d.u32()
		r.count = min(r.count, c.msize-ioHeaderSize)
	case tTlopen:
		r.fid, r.flags = d.u32(), d.u32()
	case tTflush:
		r.oldTag = d.u16()
	default: // Tstatfs Treadlink Tgetattr Tfsync Tlock Tclunk Tremove: fid first
		r.fid = d.u32()
	}
	if d.bad {
		return c.violation("truncated request type %d", typ)
	}
	if c.quick(r) {
		return c.reply(r, c.handle(c.ctx, r))
	}
	return c.start(r)
}

// quick reports whether r is answered without waiting on the store, by
// the loop itself: no goroutine is worth starting for it.
func (c *conn) quick(r *request) bool {
	switch r.typ {
	case tTgetattr, tTstatfs, tTreadlink, tTfsync, tTlock:
		return true
	case tTclunk, tTremove, tTread:
		f := c.getFid(r.fid)
		if f == nil {
			return true
		}
		defer c.release(f)
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.typ == tTread {
			// A read from a local file (the fid's last one was) is a
			// file range from vfs, sent with sendfile: nothing to wait
			// for but the socket, which a goroutine would wait for too.
			return f.blob != nil && c.raw != nil && !c.noSendfile.Load()
		}
		return f.file == nil // Tclunk, Tremove: unless it closes an open file
	}
	return false
}

// start hands r to a goroutine of its own, waiting while the connection
// has MaxRequests (or MaxReadBytes of reads) in flight.
func (c *conn) start(r *request) error {
	read := r.typ == tTread || r.typ == tTreaddir
	select {
	case c.slots <- struct{}{}:
	case <-c.done:
		return net.ErrClosed
	}
	if read {
		select {
		case c.readSlots <- struct{}{}:
		case <-c.done:
			<-c.slots
			return net.ErrClosed
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	cl := &call{cancel: cancel, done: make(chan struct{})}
	c.mu.Lock()
	c.inflight[r.tag] = cl
	c.mu.Unlock()
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		defer func() {
			cancel()
			if read {
				<-c.readSlots
			}
			<-c.slots
		}()
		var res result
		if r.typ == tTflush {
			res = c.flush(r)
		} else {
			res = c.handle(ctx, r)
		}
		if err := c.reply(r, res); err != nil {
			c.Close()
		}
	}()
	return nil
}

// checkTag closes the connection if tag is in flight: its reply could not
// be told from the new request's.
func (c *conn) checkTag(tag uint16) error {
	c.mu.Lock()
	_, dup := c.inflight[tag]
	c.mu.Unlock()
	if dup {
		return c.violation("tag %d reused while in flight", tag)
	}
	return nil
}

// flush answers Tflush once the request it names (if still in flight) has
// been answered, which it hurries by cancelling its context (vfs then
// answers EINTR if it was waiting on the store).
func (c *conn) flush(r *request) result {
	c.mu.Lock()
	old := c.inflight[r.oldTag]
	c.mu.Unlock()
	if old != nil && r.oldTag != r.tag {
		old.cancel()
		select {
		case <-old.done:
		case <-c.done:
		}
	}
	return result{msg: newReply(tTflush+1, r.tag, 0).done(0)}
}

// version handles Tversion.
func (c *conn) version(tag uint16, d *decoder) error {
	msize, vb := d.u32(), d.bytes()
	if d.bad {
		return c.violation("truncated Tversion")
	}
	if c.msize != 0 {
		return c.violation("Tversion after the session started")
	}
	maxMsize := c.srv.opts.MaxMsize
	if string(vb) != version || msize < MinMsize {
		c.log.Info("ninep: refused version", "version", clientstr.TrimBytes(vb), "msize", msize)
		return c.send(rversion(tag, min(msize, maxMsize), "unknown"))
	}
	c.msize = min(msize, maxMsize)
	n := max(1, c.srv.opts.MaxReadBytes/int(c.msize))
	c.readSlots = make(chan struct{}, n)
	c.bufs = make(chan []byte, n)
	return c.send(rversion(tag, c.msize, version))
}

func rversion(tag uint16, msize uint32, v string) []byte {
	e := newReply(tTversion+1, tag, 6+len(v))
	e.u32(msize)
	e.str(v)
	return e.done(0)
}

// violation logs a protocol violation and returns the error that ends the
// connection.
func (c *conn) violation(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.log.Warn("ninep: closing connection: " + msg)
	return fmt.Errorf("%w: %s", errProtocol, msg)
}

// setReadDeadline bounds the time the rest of a message may take to
// arrive.
func (c *conn) setReadDeadline() {
	if t := c.srv.opts.MessageTimeout; t > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t))
	}
}

// clearReadDeadline clears the deadline setReadDeadline set, if timed.
func (c *conn) clearReadDeadline(timed bool) error {
	if !timed || c.srv.opts.MessageTimeout <= 0 {
		return nil
	}
	return c.nc.SetReadDeadline(time.Time{})
}

// readFailed returns the error that ends the connection when a message
// of size bytes could not be read whole, logging a stalled one.
func (c *conn) readFailed(err error, typ uint8, size int) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.log.Info("ninep: closing connection: a message stopped arriving midway",
			"type", msgName(typ), "size", size, "timeout", c.srv.opts.MessageTimeout)
	}
	return fmt.Errorf("truncated %d-byte message: %w", size, err)
}

// result is a handler's answer: an error, or a reply message (msg) with
// an optional payload after it, from memory (data) or from a file range
// (file, sent with sendfile). done runs once the reply is sent.
type result struct {
	err  errno
	msg  []byte
	data []byte
	file *fileRange
	done func()
}

// reply sends r's result: its reply or Rlerror. A goroutine's request
// leaves the in-flight tags under wmu, just before its reply goes out, so
// that the client may reuse the tag once it has the reply, and a Tflush of
// it that finds it gone is answered after it.
func (c *conn) reply(r *request, res result) (err error) {
	defer func() {
		if res.done != nil {
			res.done()
		}
		if v := recover(); v != nil {
			c.panics.log("ninep: panic in the message loop; closing the connection", msgName(r.typ), v)
			c.Close()
			err = errLoopPanic
		}
	}()
	c.lockSend()
	defer c.wmu.Unlock()
	c.mu.Lock()
	cl := c.inflight[r.tag]
	delete(c.inflight, r.tag)
	c.mu.Unlock()
	if cl != nil {
		defer close(cl.done)
	}
	switch {
	case res.err != 0:
		err = c.write(rlerror(r.tag, res.err))
	case res.file != nil:
		err = c.sendFile(res.msg, *res.file)
	case res.data != nil:
		bufs := net.Buffers{res.msg, res.data}
		_, err = bufs.WriteTo(c.nc)
	default:
		err = c.write(res.msg)
	}
	if err != nil {
		c.failSend(err)
	}
	return err
}

// send sends a reply the loop made itself.
func (c *conn) send(msg []byte) error {
	c.lockSend()
	err := c.write(msg)
	c.wmu.Unlock()
	if err != nil {
		c.failSend(err)
	}
	return err
}

func (c *conn) write(msg []byte) error {
	_, err := c.nc.Write(msg)
	return err
}

// lockSend takes wmu for one reply and gives its writes WriteTimeout.
func (c *conn) lockSend() {
	c.wmu.Lock()
	if t := c.srv.opts.WriteTimeout; t > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(t))
	}
}

// failSend closes the connection after a reply could not be sent whole
// (the client did not take it within WriteTimeout, went away, or a blob
// file failed mid-reply): the stream may hold part of it. It logs once.
func (c *conn) failSend(err error) {
	if c.sendFailed.Swap(true) {
		return
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Info("ninep: closing connection: the client took no reply for too long", "timeout", c.srv.opts.WriteTimeout)
	case errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET),
		strings.Contains(err.Error(), "use of closed"):
		c.log.Debug("ninep: connection closed while sending a reply", "err", err)
	default:
		c.log.Warn("ninep: closing connection: sending a reply failed", "err", err)
	}
	c.Close()
}

// getBuf returns a read buffer of msize-11 bytes, for a request holding a
// read slot.
func (c *conn) getBuf() []byte {
	select {
	case b := <-c.bufs:
		return b
	default:
		return make([]byte, c.msize-ioHeaderSize)
	}
}

// putBuf gives back a buffer from getBuf.
func (c *conn) putBuf(b []byte) {
	select {
	case c.bufs <- b:
	default:
	}
}

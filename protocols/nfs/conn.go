package nfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/storefs/storefs/internal/netguard"
)

// conn is one client connection. Its serve goroutine reads records and
// dispatches each call: the record layer answers protocol errors itself
// and runs the procedure the route table names, inline when nothing else
// is pending and otherwise in a goroutine (at most MaxInFlight at once).
// Replies may leave out of order; RPC matches them by xid.
type conn struct {
	s     *Server
	nc    net.Conn
	log   *slog.Logger
	port  uint16 // client's source port, for RequireSecurePort
	wmu   sync.Mutex
	werr  error
	slots chan struct{}  // MaxInFlight
	calls sync.WaitGroup // procedures in progress in their own goroutines

	raw         syscall.RawConn // the socket, for sendfile; nil: READ replies are copied
	sendfileOff atomic.Bool     // sendfile failed on this socket: copy from now on
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{
		s:     s,
		nc:    nc,
		log:   s.log.With("client", nc.RemoteAddr().String()),
		slots: make(chan struct{}, s.opts.MaxInFlight),
	}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		c.port = ap.Port()
	}
	c.initSendfile()
	return c
}

// serve runs the connection until the client leaves, breaks the protocol,
// idles too long or the server closes; it returns after every goroutine it
// started has ended.
func (c *conn) serve() {
	defer c.nc.Close()
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		rec, err := readRecord(br, nil, c.s.opts.MaxRecordSize)
		if err != nil {
			c.logEnd(err)
			break
		}
		netguard.Active(c.nc)
		c.dispatch(rec, br.Buffered() == 0 && len(c.slots) == 0)
	}
	c.nc.Close() // unblocks replies being written
	c.calls.Wait()
}

// logEnd logs why the connection ended, unless the client just left.
func (c *conn) logEnd(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		c.log.Debug("nfs: connection closed")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Info("nfs: connection idle too long, closed", "timeout", c.s.opts.IdleTimeout)
	case errors.Is(err, errRecordTooLarge):
		c.log.Warn("nfs: connection closed: record too large", "err", err, "max", c.s.opts.MaxRecordSize)
	default:
		c.log.Warn("nfs: connection closed", "err", err)
	}
}

// send writes one reply built with replyHeader (or acceptedError and the
// like), filling in its record mark. A client that does not take its
// replies within WriteTimeout loses the connection.
func (c *conn) send(reply []byte) {
	setRecordMark(reply)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	c.setWriteDeadline()
	if _, err := c.nc.Write(reply); err != nil {
		c.werr = err
		c.log.Info("nfs: cannot send reply, closing", "err", err)
		c.nc.Close()
	}
}

// setWriteDeadline bounds the reply about to be written: a client that
// does not take it within WriteTimeout loses its connection, and the
// goroutine writing it is freed. Every write to the client follows it,
// under wmu (send, sendWithTail, sendCopied).
func (c *conn) setWriteDeadline() {
	c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
}

// dispatch answers or routes one record. idle says that no other call of
// the connection is buffered or in progress.
func (c *conn) dispatch(rec []byte, idle bool) {
	defer func() {
		// Procedures recover in run; this is for the header code. With
		// no call to answer, the connection ends instead of the daemon.
		if p := recover(); p != nil {
			c.log.Error("nfs: decoding a call panicked; closing the connection", "bytes", len(rec),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			c.nc.Close()
		}
	}()
	cl, err := parseCall(rec)
	switch {
	case cl == nil:
		c.log.Debug("nfs: dropped a record too short for an RPC call", "bytes", len(rec))
		return
	case errors.Is(err, errNotCall):
		return
	case err != nil:
		c.send(acceptedError(cl.xid, acceptGarbageArgs, 0, 0))
		return
	case cl.rpcvers != rpcVersion:
		c.send(deniedRPCMismatch(cl.xid))
		return
	}
	switch cl.flavor {
	case authNone:
	case authSys:
		if _, err := parseAuthSys(cl.cred); err != nil {
			c.send(deniedAuth(cl.xid, authBadCred))
			return
		}
	default:
		c.send(deniedAuth(cl.xid, authTooWeak))
		return
	}
	if c.s.opts.RequireSecurePort && c.port >= 1024 {
		c.send(deniedAuth(cl.xid, authTooWeak))
		return
	}
	var table []route
	switch cl.prog {
	case progNFS:
		table = c.s.routes.nfs[:]
	case progMount:
		table = c.s.routes.mount[:]
	default: // NFS_ACL, NLM, NFSv4 callbacks, anything else
		c.send(acceptedError(cl.xid, acceptProgUnavail, 0, 0))
		return
	}
	if cl.vers != 3 {
		c.send(acceptedError(cl.xid, acceptProgMismatch, 3, 3))
		return
	}
	if cl.proc >= uint32(len(table)) {
		c.send(acceptedError(cl.xid, acceptProcUnavail, 0, 0))
		return
	}
	r := table[cl.proc]
	if r.handle == nil {
		c.send(acceptedError(cl.xid, acceptProcUnavail, 0, 0))
		return
	}
	if idle {
		// Nothing else to work on: answer here and save the hand-off to
		// another goroutine (a fifth of a small call's latency). A call
		// that arrives meanwhile waits in the socket until this one is
		// answered.
		c.run(r, cl)
		return
	}
	c.slots <- struct{}{}
	c.calls.Add(1)
	go func() {
		defer c.calls.Done()
		defer func() { <-c.slots }()
		c.run(r, cl)
	}()
}

// run answers a call with one of our procedures. It is the one place
// every call's procedure runs, inline or in its own goroutine, so it is
// where a panic in a procedure stops: see recoverCall.
func (c *conn) run(r route, cl *call) {
	select { // a reply buffer of the server-wide budget (MaxReplyMemory)
	case c.s.replyBudget <- struct{}{}:
	case <-c.s.ctx.Done():
		return
	}
	defer func() { <-c.s.replyBudget }()
	buf := c.s.replyBufs.Get().(*[]byte)
	w := xdrWriter{b: (*buf)[:0]}
	replied := false
	defer c.recoverCall(r, cl, &w, &replied)
	replyHeader(&w, cl.xid, acceptSuccess)
	if err := r.handle(c, cl, &w); err != nil {
		c.log.Debug("nfs: garbage arguments", "proc", r.name, "xid", cl.xid, "err", err)
		replied = true
		c.send(acceptedError(cl.xid, acceptGarbageArgs, 0, 0))
		c.s.replyBufs.Put(buf)
		return
	}
	replied = true
	if w.tail != nil {
		c.sendFile(w.b, w.tail)
	} else {
		c.send(w.b)
	}
	if cap(w.b) <= replyBufSize(c.s.opts) {
		*buf = w.b[:0]
	}
	c.s.replyBufs.Put(buf)
}

// recoverCall stops a panic in run, logs it once with its stack, and
// answers the call with SYSTEM_ERR, which the Linux client reports as EIO
// to the one system call that made it; the connection and every other
// call go on. If the panic came while the reply was being sent, part of it
// may be out and the stream cannot be trusted: the connection is closed
// instead. The reply buffer is left to the garbage collector.
func (c *conn) recoverCall(r route, cl *call, w *xdrWriter, replied *bool) {
	p := recover()
	if p == nil {
		return
	}
	c.log.Error("nfs: procedure panicked", "prog", cl.prog, "proc", r.name, "xid", cl.xid,
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if *replied {
		c.nc.Close()
		return
	}
	if w.tail != nil { // sendFile would have closed it
		w.tail.vf.Close()
	}
	c.send(acceptedError(cl.xid, acceptSystemErr, 0, 0))
}

// replyBufSize is the capacity of pooled reply buffers: a READ reply of
// MaxRead bytes, or a READDIR reply of maxReaddirReply, fits.
func replyBufSize(o Options) int { return max(int(o.MaxRead), maxReaddirReply) + 1024 }

package nfs

import (
	"syscall"

	"github.com/storefs/storefs/protocols/internal/sendfile"
)

// initSendfile enables zero-copy READ replies on connections whose socket
// the kernel can sendfile(2) to, as Options.Sendfile allows.
func (c *conn) initSendfile() {
	if !c.s.opts.Sendfile.usedFor(c.nc.RemoteAddr()) {
		return
	}
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = raw
}

// sendfileOK reports whether READ replies may be sent with sendfile.
func (c *conn) sendfileOK() bool { return c.raw != nil && !c.sendfileOff.Load() }

// zeros are XDR padding.
var zeros [4]byte

// sendWithTail writes head, then t's bytes with sendfile, then the
// padding, holding the send lock so that replies never interleave. A
// failure after part of the reply went out closes the connection: the
// stream cannot be resynchronised.
func (c *conn) sendWithTail(head []byte, t *fileTail) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.setWriteDeadline() // sendfile waits through the poller, which honours it
	r := sendfile.Send(c.raw, head, t.f, t.off, t.n, zeros[:t.pad()])
	switch {
	case r.FileClosed:
		// Nothing went out.
		return c.sendFailed(c.sendCopied(head, t, 0))
	case r.SocketErr != nil:
		return c.sendFailed(r.SocketErr)
	case r.FileErr != nil:
		if r.Unsupported() {
			c.log.Debug("nfs: sendfile unusable on this connection; copying reads", "err", r.FileErr)
			c.sendfileOff.Store(true)
		}
		// The head is out: send the rest from a pread (which fails the
		// same way if the file itself is bad, and closes the connection).
		return c.sendFailed(c.sendCopied(nil, t, r.Sent))
	}
	c.s.spliced.Add(1)
	return nil
}

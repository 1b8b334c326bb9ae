package ninep

import (
	"syscall"

	"github.com/storefs/storefs/protocols/internal/sendfile"
)

// initSendfile enables zero-copy Rread on connections whose socket the
// kernel can sendfile(2) to (TCP and unix sockets).
func (c *wireConn) initSendfile() {
	sc, ok := c.conn.(syscall.Conn) // a netguard.Conn passes it on
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = raw
	c.spliced = newSplicedReads()
}

// sendfileReply sends an Rread whose payload r is in a blob file: the
// header (frame) from memory, then the payload with sendfile(2). buf is the
// library's buffer for the payload (nil for a direct read), used only if
// sendfile fails.
func (c *wireConn) sendfileReply(frame, buf []byte, r splicedRead) error {
	c.lockSend()
	defer c.sendMu.Unlock()
	res := sendfile.Send(c.raw, frame, r.f, r.off, r.n, nil)
	switch {
	case res.FileClosed:
		// The blob file is closed (a Tclunk raced this Tread): nothing
		// went out, and the pread fails the same way (Rlerror EIO).
		return c.sendCopied(frame, buf, r, 0)
	case res.SocketErr != nil:
		if res.Started() {
			c.Close() // part of a reply went out: the stream is broken
		}
		return res.SocketErr
	case res.FileErr != nil:
		if res.Unsupported() {
			c.log.Debug("ninep: sendfile unusable on this connection; copying reads", "err", res.FileErr)
			c.spliced.disable()
		}
		// The header is out: send the rest from a pread (which fails the
		// same way if the file itself is bad).
		return c.sendCopied(nil, buf, r, res.Sent)
	}
	c.spliceCount.Add(1)
	return nil
}

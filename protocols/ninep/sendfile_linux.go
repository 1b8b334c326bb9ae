package ninep

import (
	"syscall"

	"github.com/storefs/storefs/protocols/internal/sendfile"
)

// initSendfile enables zero-copy Rread on connections whose socket the
// kernel can sendfile(2) to (TCP and unix sockets).
func (c *conn) initSendfile() {
	sc, ok := c.nc.(syscall.Conn) // a netguard.Conn passes it on
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = raw
}

// sendFile sends an Rread whose payload r is in a blob file: the header
// from memory, then the payload with sendfile(2). The caller holds wmu.
func (c *conn) sendFile(head []byte, r fileRange) error {
	res := sendfile.Send(c.raw, head, r.f, r.off, r.n, nil)
	switch {
	case res.FileClosed:
		// Nothing went out, and the pread fails the same way (EIO).
		return c.sendCopied(head, r, 0)
	case res.SocketErr != nil:
		if res.Started() {
			c.Close() // part of a reply went out: the stream is broken
		}
		return res.SocketErr
	case res.FileErr != nil:
		if res.Unsupported() {
			c.log.Debug("ninep: sendfile unusable on this connection; copying reads", "err", res.FileErr)
			c.noSendfile.Store(true)
		}
		// The header is out: send the rest from a pread (which fails the
		// same way if the file itself is bad).
		return c.sendCopied(nil, r, res.Sent)
	}
	c.srv.spliced.Add(1)
	return nil
}

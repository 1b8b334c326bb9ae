//go:build !linux

package ninep

// initSendfile leaves zero-copy Rread off: it is implemented for Linux
// only.
func (c *wireConn) initSendfile() {}

// sendfileReply is never called without initSendfile; it copies.
func (c *wireConn) sendfileReply(frame, buf []byte, r splicedRead) error {
	c.lockSend()
	defer c.sendMu.Unlock()
	return c.sendCopied(frame, buf, r, 0)
}

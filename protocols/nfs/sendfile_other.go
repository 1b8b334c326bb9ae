//go:build !linux

package nfs

// initSendfile leaves zero-copy READ replies off: they are implemented for
// Linux only.
func (c *conn) initSendfile() {}

// sendfileOK is false: see initSendfile.
func (c *conn) sendfileOK() bool { return false }

// sendWithTail is never called without sendfileOK; it copies.
func (c *conn) sendWithTail(head []byte, t *fileTail) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.setWriteDeadline()
	return c.sendFailed(c.sendCopied(head, t, 0))
}

//go:build !linux

package ninep

// initSendfile leaves zero-copy Rread off: it is implemented for Linux
// only.
func (c *conn) initSendfile() {}

// sendFile is never called without initSendfile; it copies.
func (c *conn) sendFile(head []byte, r fileRange) error { return c.sendCopied(head, r, 0) }

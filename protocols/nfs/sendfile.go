package nfs

import (
	"net"
	"os"

	"github.com/storefs/storefs/protocols/internal/sendfile"
	"github.com/storefs/storefs/vfs"
)

// Zero-copy READ. When a file's blob is a range of a file on a local
// filesystem (the embedded store of a trusted-local store: vfs hands out
// its reader, with File and FileOffset, only then), the READ reply is sent
// as its XDR head from memory — RPC header, status, attributes, count, eof
// and the data's length — followed by the data with sendfile(2) from the
// blob file (page cache to socket, no read into user space and no copy
// out of it) and the XDR padding. The head and the data are built exactly
// as for a copied read, so the two replies are byte for byte the same.

// spliceMin is the smallest READ payload sent with sendfile.
const spliceMin = sendfile.MinPayload

// fileTail is the data of a READ reply that is sent from a file: n bytes
// at off in f, then XDR padding. vf is the open file they belong to; it
// keeps f open until the reply is sent, and is closed then.
type fileTail struct {
	f   *os.File
	off int64
	n   int
	vf  *vfs.File
}

// pad is the XDR padding after the tail's bytes.
func (t *fileTail) pad() int { return -t.n & 3 }

// sendFile sends a reply whose head (built with replyHeader) is followed
// by t's bytes, and closes t.vf. vfs counted the read when it answered it
// with the file range.
func (c *conn) sendFile(head []byte, t *fileTail) {
	defer t.vf.Close()
	setRecordMarkLen(head, len(head)-4+t.n+t.pad())
	c.sendWithTail(head, t)
}

// sendCopied sends what sendfile did not: the tail from byte from on, read
// into memory, after head unless head is nil (already sent), then the
// padding. The caller holds wmu. If the read fails, the reply cannot be
// completed (its head promised the bytes) and the connection is closed.
func (c *conn) sendCopied(head []byte, t *fileTail, from int) error {
	buf := make([]byte, t.n-from+t.pad())
	if _, err := t.f.ReadAt(buf[:t.n-from], t.off+int64(from)); err != nil {
		c.log.Error("nfs: closing connection: reading a blob file failed in the middle of a READ reply", "err", err)
		c.werr = err
		c.nc.Close()
		return err
	}
	var bufs net.Buffers
	if head != nil {
		bufs = append(bufs, head)
	}
	bufs = append(bufs, buf)
	_, err := bufs.WriteTo(c.nc)
	return err
}

// sendFailed records that a reply could not be sent (err, if not nil) and
// closes the connection, as send does. The caller holds wmu.
func (c *conn) sendFailed(err error) error {
	if err == nil || c.werr != nil {
		return err
	}
	c.werr = err
	c.log.Info("nfs: cannot send reply, closing", "err", err)
	c.nc.Close()
	return err
}

package ninep

import (
	"errors"
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// initSendfile enables zero-copy Rread on connections whose socket the
// kernel can sendfile(2) to (TCP and unix sockets).
func (c *wireConn) initSendfile() {
	sc, ok := c.conn.(syscall.Conn)
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
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	fc, err := r.f.SyscallConn()
	if err != nil {
		return c.sendCopied(frame, buf, r, 0)
	}
	var hdr, sent int
	var sockErr, fileErr error
	// Control keeps the blob's descriptor open while it is used, even if
	// a racing Tclunk closes its vfs.File.
	ctlErr := fc.Control(func(ffd uintptr) {
		werr := c.raw.Write(func(sfd uintptr) bool {
			for hdr < len(frame) {
				// Not MSG_MORE: measured on loopback, holding the header
				// back for the payload costs a third more CPU per 64 KiB
				// reply than sending it on its own.
				k, err := unix.SendmsgN(int(sfd), frame[hdr:], nil, nil, unix.MSG_NOSIGNAL)
				switch {
				case errors.Is(err, unix.EINTR):
					continue
				case errors.Is(err, unix.EAGAIN):
					return false // wait until the socket is writable
				case err != nil:
					sockErr = err
					return true
				}
				hdr += k
			}
			for sent < r.n {
				off := r.off + int64(sent)
				k, err := unix.Sendfile(int(sfd), int(ffd), &off, r.n-sent)
				if k > 0 {
					sent += k
				}
				switch {
				case errors.Is(err, unix.EINTR):
					continue
				case errors.Is(err, unix.EAGAIN):
					return false
				case err != nil:
					fileErr = err
					return true
				case k == 0:
					fileErr = io.ErrUnexpectedEOF // the file is shorter than its blob
					return true
				}
			}
			return true
		})
		if werr != nil && sockErr == nil {
			sockErr = werr
		}
	})
	switch {
	case ctlErr != nil:
		// The blob file is closed (a Tclunk raced this Tread): nothing
		// went out, and the pread fails the same way (Rlerror EIO).
		return c.sendCopied(frame, buf, r, 0)
	case sockErr != nil:
		if hdr > 0 {
			c.Close() // part of a reply went out: the stream is broken
		}
		return sockErr
	case fileErr != nil:
		if sent == 0 && (errors.Is(fileErr, unix.EINVAL) || errors.Is(fileErr, unix.ENOSYS) || errors.Is(fileErr, unix.EOPNOTSUPP)) {
			// This socket or file cannot be spliced: copy from now on.
			c.log.Debug("ninep: sendfile unusable on this connection; copying reads", "err", fileErr)
			c.spliced.disable()
		}
		// The header is out: send the rest from a pread (which fails the
		// same way if the file itself is bad).
		return c.sendCopied(nil, buf, r, sent)
	}
	c.spliceCount.Add(1)
	return nil
}

package nfs

import (
	"errors"
	"io"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initSendfile enables zero-copy READ replies on connections whose socket
// the kernel can sendfile(2) to.
func (c *conn) initSendfile() {
	if c.s.opts.NoSendfile {
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
	c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.IdleTimeout))
	fc, err := t.f.SyscallConn()
	if err != nil {
		return c.sendFailed(c.sendCopied(head, t, 0))
	}
	pad := zeros[:t.pad()]
	var hdr, sent, padded int
	var sockErr, fileErr error
	// Control keeps the blob's descriptor open while it is used.
	ctlErr := fc.Control(func(ffd uintptr) {
		werr := c.raw.Write(func(sfd uintptr) bool {
			for hdr < len(head) {
				// Not MSG_MORE: on loopback, holding the head back for
				// the data costs more CPU than sending it on its own
				// (measured for 9P's Rread, protocols/ninep).
				k, err := unix.SendmsgN(int(sfd), head[hdr:], nil, nil, unix.MSG_NOSIGNAL)
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
			for sent < t.n {
				off := t.off + int64(sent)
				k, err := unix.Sendfile(int(sfd), int(ffd), &off, t.n-sent)
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
					fileErr = io.ErrUnexpectedEOF // the file shrank since it was checked
					return true
				}
			}
			for padded < len(pad) {
				k, err := unix.SendmsgN(int(sfd), pad[padded:], nil, nil, unix.MSG_NOSIGNAL)
				switch {
				case errors.Is(err, unix.EINTR):
					continue
				case errors.Is(err, unix.EAGAIN):
					return false
				case err != nil:
					sockErr = err
					return true
				}
				padded += k
			}
			return true
		})
		if werr != nil && sockErr == nil {
			sockErr = werr // deadline, or the connection was closed
		}
	})
	switch {
	case ctlErr != nil:
		// The blob file is closed: nothing went out yet.
		return c.sendFailed(c.sendCopied(head, t, 0))
	case sockErr != nil:
		return c.sendFailed(sockErr)
	case fileErr != nil:
		if sent == 0 && (errors.Is(fileErr, unix.EINVAL) || errors.Is(fileErr, unix.ENOSYS) || errors.Is(fileErr, unix.EOPNOTSUPP)) {
			// This socket or file cannot be spliced: copy from now on.
			c.log.Debug("nfs: sendfile unusable on this connection; copying reads", "err", fileErr)
			c.sendfileOff.Store(true)
		}
		// The head is out: send the rest from a pread (which fails the
		// same way if the file itself is bad, and closes the connection).
		return c.sendFailed(c.sendCopied(nil, t, sent))
	}
	c.s.spliced.Add(1)
	return nil
}

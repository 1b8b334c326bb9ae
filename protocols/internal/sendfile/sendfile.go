// Package sendfile writes a protocol reply whose payload is a range of a
// file to a socket, with the payload sent by sendfile(2): page cache to
// socket, without reading it into user space and copying it out again.
// The NFS and 9P frontends use it for reads of blobs that are local files
// (vfs.File.BlobFile); each decides what to do when it cannot finish.
package sendfile

import (
	"errors"
	"os"
	"syscall"
)

// MinPayload is the smallest payload worth sending with Send. Below it
// one pread and one write through user space cost less than the separate
// head write and sendfile, and small files are mostly read whole in one
// reply anyway.
const MinPayload = 16 << 10

// Result says how far Send got.
type Result struct {
	// Head, Sent and Tail count the bytes of the head, of the file range
	// and of the tail that went out.
	Head, Sent, Tail int
	// FileClosed is set when f was closed before Send could use it:
	// nothing went out.
	FileClosed bool
	// SocketErr is the error writing to the socket (a deadline, a closed
	// or reset connection).
	SocketErr error
	// FileErr is the error sending from the file: one of sendfile(2), or
	// io.ErrUnexpectedEOF when the file ended before the range did.
	FileErr error
}

// Started reports whether any byte of the reply went out: after that the
// stream holds part of a reply, and the caller must finish it or close
// the connection.
func (r Result) Started() bool { return r.Head > 0 || r.Sent > 0 || r.Tail > 0 }

// Unsupported reports whether the file part failed before sending a byte
// because this socket or file cannot be used with sendfile at all: the
// caller should copy its payloads from then on.
func (r Result) Unsupported() bool {
	return r.Sent == 0 && (errors.Is(r.FileErr, syscall.EINVAL) || errors.Is(r.FileErr, syscall.ENOSYS) ||
		errors.Is(r.FileErr, syscall.EOPNOTSUPP) || errors.Is(r.FileErr, errors.ErrUnsupported))
}

// Send writes head, then n bytes of f at off, then tail, to the socket
// behind sock, waiting while the socket is full (sock's write deadline
// applies). The caller serialises writes to the socket. f stays open
// while it is used, even if another goroutine closes it meanwhile.
func Send(sock syscall.RawConn, head []byte, f *os.File, off int64, n int, tail []byte) Result {
	return send(sock, head, f, off, n, tail)
}

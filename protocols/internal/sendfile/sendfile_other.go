//go:build !linux

package sendfile

import (
	"errors"
	"os"
	"syscall"
)

// send sends nothing here: sendfile is used on Linux only, and the result
// tells the caller to copy.
func send(sock syscall.RawConn, head []byte, f *os.File, off int64, n int, tail []byte) Result {
	return Result{FileErr: errors.ErrUnsupported}
}

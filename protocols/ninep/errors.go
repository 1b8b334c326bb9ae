package ninep

import (
	"syscall"

	"github.com/storefs/storefs/vfs"
)

// errno is what an Rlerror carries: a Linux errno.
type errno = syscall.Errno

// errnoOf returns the Rlerror errno of a vfs error. It is the one place 9P
// errnos for filesystem operations come from: vfs.Errno decides.
func errnoOf(err error) errno { return vfs.Errno(err) }

// refusal returns the Rlerror errno for the write-type request op: what vfs
// answers for every write (EROFS).
func refusal(op string) errno { return vfs.Errno(vfs.ReadOnly(op, "")) }

// Protocol errors that vfs has no say in: they concern the 9P session, not
// the filesystem.
const (
	errBadFid         = syscall.EBADF        // a fid the connection does not hold
	errTooManyFids    = syscall.EMFILE       // the connection holds Options.MaxFids path entries
	errTooManyNames   = syscall.EINVAL       // a Twalk of more than 16 names
	errNameTooLong    = syscall.ENAMETOOLONG // a Tattach uname or aname longer than PATH_MAX
	errNoAuth         = syscall.ENOENT       // Tauth: diod's "authentication not required"
	errAlreadyOpen    = syscall.EINVAL       // a second Tlopen of one fid
	errNotOpen        = syscall.EINVAL       // Tread or Treaddir of a fid not opened
	errCountTooSmall  = syscall.EINVAL       // Treaddir count cannot hold the next entry
	errCookieOverflow = syscall.EOVERFLOW    // a vfs cookie that does not fit a 9P offset
	errNotARequest    = syscall.ENOSYS       // a reply sent as a request
	errUnknownType    = syscall.EIO          // a message type the server does not know
	errPanic          = syscall.EIO          // a request whose handling panicked
)

// notDir is vfs's answer to a walk of "." or ".." from a non-directory,
// which vfs.Lookup would give for any other name.
func notDir(name string) errno {
	return vfs.Errno(&vfs.Error{Op: "lookup", Name: name, Errno: syscall.ENOTDIR})
}

package ninep

import (
	"errors"
	"io"

	"github.com/hugelgupf/p9/linux"

	"github.com/storefs/storefs/vfs"
)

// p9Error turns a vfs error into the error the p9 library sends as Rlerror.
// It is the one place 9P errnos come from: vfs.Errno decides, and the result
// is a bare linux.Errno because the library's linux.ExtractErrno tests
// os.ErrPermission and friends first and would turn EPERM into EACCES if it
// saw the *vfs.Error itself. io.EOF passes through: the library treats it
// as a short read, not an error.
func p9Error(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return linux.Errno(vfs.Errno(err))
}

// refusal returns the Rlerror errno for the write-type request op: what vfs
// answers for every write (EROFS).
func refusal(op string) linux.Errno {
	return linux.Errno(vfs.Errno(vfs.ReadOnly(op, "")))
}

// Protocol errors that vfs has no say in: they concern the 9P session, not
// the filesystem.
const (
	errTooManyFids    = linux.EMFILE       // the connection holds Options.MaxFids fids
	errTooManyNames   = linux.EINVAL       // a Twalk of more than 16 names
	errNameTooLong    = linux.ENAMETOOLONG // a Tattach uname or aname longer than PATH_MAX
	errNoData         = linux.ENODATA
	errNoAuth         = linux.ENOENT    // Tauth: diod's "authentication not required"
	errAlreadyOpen    = linux.EINVAL    // a second Tlopen of one fid
	errCountTooSmall  = linux.EINVAL    // Treaddir count cannot hold the next entry
	errCookieOverflow = linux.EOVERFLOW // a vfs cookie that does not fit a 9P offset
)

package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// errDirectRefused is how a write says that the filesystem does not take
// O_DIRECT writes (or not with this alignment).
var errDirectRefused = unix.EINVAL

// setDirect turns O_DIRECT on or off for f.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, flags)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fcntl O_DIRECT", Path: f.Name(), Err: serr}
	}
	return nil
}

// openDirect opens path for writing with O_DIRECT.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
}

package fuse

import (
	"log/slog"
	"syscall"

	"github.com/storefs/storefs/vfs"
)

// answered lists the errnos vfs decides that FUSE passes to the kernel
// unchanged. Anything else becomes EIO: an unexpected errno must not reach
// the kernel, where some have a meaning of their own (ENOSYS makes the
// kernel stop sending an operation for the whole mount).
var answered = map[syscall.Errno]bool{
	syscall.ENOENT:       true,
	syscall.EIO:          true,
	syscall.EPERM:        true,
	syscall.EROFS:        true,
	syscall.EINVAL:       true,
	syscall.EISDIR:       true,
	syscall.ENOTDIR:      true,
	syscall.ENODATA:      true,
	syscall.ERANGE:       true,
	syscall.ENAMETOOLONG: true,
	syscall.ESTALE:       true,
	syscall.ELOOP:        true,
	syscall.EINTR:        true,
}

// errno turns a vfs error into the FUSE answer: the one place where this
// package maps errors. Backend failures (EIO) are logged at debug level;
// vfs has already logged integrity failures.
func errno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	e := vfs.Errno(err)
	if !answered[e] {
		log.Warn("fuse: unexpected errno from vfs, answering EIO", "op", op, "errno", e, "err", err)
		return syscall.EIO
	}
	if e == syscall.EIO {
		log.Debug("fuse: EIO", "op", op, "err", err)
	}
	return e
}

// refuse is the answer to every write: EROFS, decided by vfs.ReadOnly.
func refuse(op, name string) syscall.Errno {
	return vfs.Errno(vfs.ReadOnly(op, name))
}

package vfs

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"syscall"
)

// Error is the error every vfs operation returns. It names the operation and
// the name or node it was applied to, carries the errno every frontend
// answers with, and wraps the cause (a storeclient error, a context error,
// or nothing for a plain refusal).
//
// errors.Is(err, syscall.ENOENT) and errors.Is(err, fs.ErrNotExist) work on
// it; Errno(err) returns the errno.
type Error struct {
	Op    string        // the vfs operation, e.g. "lookup"
	Name  string        // the entry name or node the operation was about; may be empty
	Errno syscall.Errno // what frontends answer
	Err   error         // the cause; may be nil
}

func (e *Error) Error() string {
	msg := e.Op
	if e.Name != "" {
		msg += fmt.Sprintf(" %q", e.Name)
	}
	msg += ": " + e.Errno.Error()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's errno, a bare sentinel *Error with
// the same errno (such as ErrReadOnly), or an error the errno stands for
// (syscall.Errno.Is maps ENOENT to fs.ErrNotExist and so on).
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case syscall.Errno:
		return t == e.Errno
	case *Error:
		// A bare sentinel such as ErrReadOnly matches every Error with
		// its errno.
		return t.Err == nil && t.Name == "" && t.Errno == e.Errno
	}
	return e.Errno.Is(target)
}

// Errno returns the errno a frontend answers for err: 0 for nil, the errno of
// the first *Error in err's chain, a syscall.Errno found in the chain, and
// EIO for anything else (a backend failure, a timeout).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var ve *Error
	if errors.As(err, &ve) {
		return ve.Errno
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}

// ErrReadOnly is the refusal of every operation that would write. Frontends
// answer EROFS (NFS3ERR_ROFS, 9P Rlerror EROFS) for it.
var ErrReadOnly error = &Error{Op: "write", Errno: syscall.EROFS}

// ReadOnly returns the refusal of the write operation op (create, write,
// mkdir, rename, unlink, rmdir, setattr, link, symlink, setxattr,
// removexattr, mknod, ...) on name. It matches ErrReadOnly with errors.Is
// and maps to EROFS. Every frontend refuses writes through it, so all refuse
// them the same way.
func ReadOnly(op, name string) error {
	return &Error{Op: op, Name: name, Errno: syscall.EROFS, Err: errReadOnlyCause}
}

var errReadOnlyCause = errors.New("the store filesystem is read-only")

func newError(op, name string, errno syscall.Errno, cause error) error {
	return &Error{Op: op, Name: name, Errno: errno, Err: cause}
}

// backendError turns a failed store call into EIO, keeping the cause.
// A timeout is EIO too: the caller gets an answer instead of a hang.
//
// A cancelled context is EINTR: the caller itself gave up (the kernel
// interrupted the FUSE request because the reading process got a signal,
// a 9P client flushed the request, a connection closed). Work shared with
// other callers never runs under one caller's cancellation (see shared),
// so only the caller that gave up gets EINTR. It is not EIO because
// nothing is wrong with the store: Go programs reading a FUSE mount are
// interrupted routinely (the runtime preempts goroutines with signals), and
// they, like most C programs, retry a call that fails with EINTR.
func backendError(op, name string, cause error) error {
	switch {
	case errors.Is(cause, context.DeadlineExceeded):
		cause = fmt.Errorf("backend did not answer in time: %w", cause)
	case errors.Is(cause, context.Canceled):
		return newError(op, name, syscall.EINTR, cause)
	}
	return newError(op, name, syscall.EIO, cause)
}

// storeCall runs call, one call into the store named name, and turns a
// panic in it into an error: a store that panics (a damaged database, a
// bug in a backend) is a failing store — EIO for that request, logged once
// with the stack — never the end of the daemon.
func storeCall[T any](f *fsState, name string, call func() (T, error)) (v T, err error) {
	defer f.recoverStore(name, &err)
	return call()
}

// recoverStore is deferred around calls into the store: it recovers a
// panic, logs it and sets *err.
func (f *fsState) recoverStore(name string, err *error) {
	if p := recover(); p != nil {
		f.log.Error("vfs: the store panicked; answering EIO", "call", name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		*err = fmt.Errorf("store panicked in %s: %v", name, p)
	}
}

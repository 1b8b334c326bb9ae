package local

import (
	"errors"
	"os"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// This file holds the raw system calls of PutSmallBlob on Linux: an
// unnamed file made with O_TMPFILE, written through its descriptor and
// linked under its final name. Raw descriptors skip what an *os.File costs
// per file (fcntl calls, registration with the runtime poller, a
// finalizer), which is most of the system time of an import of many small
// files; an unnamed file needs no chmod, no rename and no cleanup after a
// crash (the kernel frees it).

// tmpfileLinker makes blob files with O_TMPFILE and linkat(2). It
// remembers whether linking by descriptor (AT_EMPTY_PATH, which needs
// CAP_DAC_READ_SEARCH on older kernels) was refused, so that later links
// go through /proc/self/fd directly.
type tmpfileLinker struct {
	viaProc atomic.Bool
}

// create writes data to a new read-only file in dir and gives it the name
// final. It returns os.ErrExist (wrapped) when final exists already, and
// errNoTmpfile when dir's filesystem has no O_TMPFILE.
func (l *tmpfileLinker) create(dir, final string, data []byte) error {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o444)
	})
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
			return errNoTmpfile
		}
		return &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	for b := data; len(b) > 0; {
		n, err := retryEINTR(func() (int, error) { return unix.Write(fd, b) })
		if err != nil {
			return &os.PathError{Op: "write", Path: final, Err: err}
		}
		b = b[n:]
	}
	return l.link(fd, final)
}

// link gives the unnamed file fd the name final.
func (l *tmpfileLinker) link(fd int, final string) error {
	if !l.viaProc.Load() {
		err := unix.Linkat(fd, "", unix.AT_FDCWD, final, unix.AT_EMPTY_PATH)
		if err == nil {
			return nil
		}
		if err != unix.ENOENT && err != unix.EPERM {
			return &os.LinkError{Op: "link", Old: "O_TMPFILE", New: final, Err: err}
		}
		// Without CAP_DAC_READ_SEARCH, AT_EMPTY_PATH fails with ENOENT.
		// A missing shard directory fails the same way below.
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "link", Old: proc, New: final, Err: err}
	}
	l.viaProc.Store(true)
	return nil
}

// retryEINTR calls f until it does not fail with EINTR.
func retryEINTR(f func() (int, error)) (int, error) {
	for {
		if n, err := f(); err != unix.EINTR {
			return n, err
		}
	}
}

// startWriteback starts writing n bytes of f from off to disk, without
// waiting (sync_file_range(2) with SYNC_FILE_RANGE_WRITE). It is a hint:
// durability still comes from syncBlobs, so an error is ignored.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

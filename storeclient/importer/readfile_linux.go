package importer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// readSmallFile reads the file at path, which the walk listed as a regular
// file of len(buf) bytes, whole into buf, and fails if it is no longer a
// regular file or no longer has exactly len(buf) bytes.
//
// It is the one place of the importer that uses raw system calls: an
// *os.File costs several fcntl calls, a registration with the runtime
// poller and a finalizer per file, more than the read itself for the many
// small files of a tree. Here a file costs open, fstat, two reads and
// close.
func readSmallFile(path string, buf []byte) error {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	})
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errNotRegular(path)
	}
	for b := buf; len(b) > 0; {
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, b) })
		if err != nil {
			return fmt.Errorf("read %s: %w", quote(path), err)
		}
		if n == 0 {
			return errShrunk(path, uint64(len(buf)))
		}
		b = b[n:]
	}
	var one [1]byte
	n, err := retryEINTR(func() (int, error) { return unix.Read(fd, one[:]) })
	if err != nil {
		return fmt.Errorf("read %s: %w", quote(path), err)
	}
	if n > 0 {
		return errGrown(path, uint64(len(buf)))
	}
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

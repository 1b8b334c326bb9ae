package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The store lock lives on DIR/lock and has two parts:
//
//   - Byte 0 carries an open file description (OFD) lock. It is what
//     excludes: an OFD lock belongs to one open file, so two writers in one
//     process conflict exactly like two processes do, and closing one
//     opener's file never drops another opener's lock (classic POSIX locks
//     are per process and have both problems).
//   - Byte 1 carries a classic POSIX fcntl lock of the same type, taken
//     right after the OFD lock. It only serves to name the holder: F_GETLK
//     reports the pid of a conflicting classic lock, while for an OFD lock
//     Linux reports -1.
const (
	lockByteOFD   = 0
	lockBytePOSIX = 1
)

// lockRetry is how often a conflicting open tries the lock again.
const lockRetry = 20 * time.Millisecond

// storeLock is a held lock on DIR/lock.
type storeLock struct {
	f *os.File
}

// acquireLock takes the lock of the store in dir exclusively: it is held
// by the writer, and by an opener while it creates the store. It waits up
// to timeout (no wait if timeout <= 0) and then fails with an error naming
// the holder's pid when it is known.
func acquireLock(ctx context.Context, dir string, timeout time.Duration) (*storeLock, error) {
	path := lockPath(dir)
	typ := int16(unix.F_WRLCK)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: lockByteOFD, Len: 1})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !time.Now().Before(deadline) {
			pid := holderPID(f, typ)
			f.Close()
			if pid > 0 {
				return nil, fmt.Errorf("store %s is locked by pid %d", dir, pid)
			}
			return nil, fmt.Errorf("store %s is locked by another opener in this or another process (pid not known)", dir)
		}
		t := time.NewTimer(min(lockRetry, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("wait for the lock of store %s: %w", dir, ctx.Err())
		case <-t.C:
		}
	}
	// Best effort: the classic lock only names us to a waiting opener.
	// It can fail only in the instant a previous holder is closing.
	_ = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: lockBytePOSIX, Len: 1})
	return &storeLock{f: f}, nil
}

// holderPID returns the pid of a process holding a lock that conflicts
// with typ, or 0 if none is found (F_GETLK never reports the caller's own
// classic locks).
func holderPID(f *os.File, typ int16) int {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: lockBytePOSIX, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}

// release drops the lock by closing the file, which ends both of its parts.
func (l *storeLock) release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("release store lock: %w", err)
	}
	return nil
}

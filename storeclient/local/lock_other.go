//go:build unix && !linux

package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockRetry is how often a conflicting open tries the lock again.
const lockRetry = 20 * time.Millisecond

// storeLock is a held lock on DIR/lock. Outside Linux there are no open
// file description locks, so flock(2) excludes (it too belongs to the open
// file) and the holder's pid is not known.
type storeLock struct {
	f *os.File
}

// acquireLock takes the lock of the store in dir exclusively: it is held
// by the writer, and by an opener while it creates the store. It waits up
// to timeout (no wait if timeout <= 0).
func acquireLock(ctx context.Context, dir string, timeout time.Duration) (*storeLock, error) {
	path := lockPath(dir)
	how := unix.LOCK_EX
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &storeLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !time.Now().Before(deadline) {
			f.Close()
			return nil, fmt.Errorf("store %s is locked by another opener (pid not known on this system)", dir)
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
}

// release drops the lock by closing the file.
func (l *storeLock) release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("release store lock: %w", err)
	}
	return nil
}

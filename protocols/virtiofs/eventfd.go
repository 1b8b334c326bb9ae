//go:build linux

package virtiofs

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// eventFD is an eventfd received from the front-end (a queue's kick,
// call or error notifier), used with plain system calls.
//
// It is deliberately not an *os.File. QEMU makes its eventfds
// non-blocking, and os.NewFile registers a non-blocking descriptor with
// Go's network poller (edge-triggered, for reading and writing). Then
// every kick the guest sends, and every time QEMU consumes a call we
// signalled, also wakes the runtime's poller thread, which finds no
// goroutine waiting and goes back to sleep: several thread wake-ups per
// request, each one taking a CPU from QEMU's threads (measured under TCG
// on 2 cores: 6 context switches per guest READ against virtiofsd's 1).
// The descriptor's file status flags are shared with the front-end and
// left as they are: QEMU reads some of them itself, and a back-end that
// made them blocking could hang it.
//
// Every use holds mu for reading, so Close (which takes it for writing)
// never closes the descriptor under a system call that still uses its
// number. A wait in progress holds it until the eventfd is signalled:
// the ring that waits is stopped, which signals its kick, before its
// kick is closed.
type eventFD struct {
	name string
	mu   sync.RWMutex
	fd   int // -1 once closed
}

// newEventFD takes ownership of fd.
func newEventFD(fd int, name string) *eventFD {
	return &eventFD{name: name, fd: fd}
}

// use runs f on the descriptor under the read lock, or fails with
// os.ErrClosed; what names the operation in errors.
func (e *eventFD) use(what string, f func(fd int) error) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return fmt.Errorf("%s %s: %w", what, e.name, os.ErrClosed)
	}
	if err := f(e.fd); err != nil {
		return fmt.Errorf("%s %s: %w", what, e.name, err)
	}
	return nil
}

// signal adds one to the eventfd's counter.
func (e *eventFD) signal() error {
	return e.use("signal", func(fd int) error {
		var one [8]byte
		binary.LittleEndian.PutUint64(one[:], 1)
		for {
			if _, err := unix.Write(fd, one[:]); err != unix.EINTR {
				return err
			}
		}
	})
}

// wait blocks until the eventfd is signalled and consumes its counter.
// The calling thread sleeps in poll(2) and wakes straight into this
// goroutine: for a guest that sends one request at a time this is a
// shorter path from its kick to its request than the runtime's network
// poller.
func (e *eventFD) wait() error {
	return e.use("wait for", func(fd int) error {
		var buf [8]byte
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
				return fmt.Errorf("poll: %w", err)
			}
			// Non-blocking: EAGAIN if someone else consumed the count first.
			switch _, err := unix.Read(fd, buf[:]); err {
			case nil:
				return nil
			case unix.EAGAIN, unix.EINTR:
			default:
				return fmt.Errorf("read: %w", err)
			}
		}
	})
}

// Close closes the descriptor, after any signal or wait in progress;
// later uses fail with os.ErrClosed. Closing twice is a no-op.
func (e *eventFD) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}

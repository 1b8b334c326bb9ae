//go:build linux

package virtiofs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestEventFD makes a non-blocking eventfd, as QEMU passes them.
func newTestEventFD(t *testing.T) *eventFD {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	e := newEventFD(fd, "test eventfd")
	t.Cleanup(func() { e.Close() })
	return e
}

func TestEventFDSignalWait(t *testing.T) {
	e := newTestEventFD(t)
	if err := e.signal(); err != nil {
		t.Fatalf("signal: %v", err)
	}
	if err := e.wait(); err != nil {
		t.Fatalf("wait after signal: %v", err)
	}

	// A wait blocks until the next signal, and consumes it.
	done := make(chan error, 1)
	go func() { done <- e.wait() }()
	select {
	case err := <-done:
		t.Fatalf("wait returned %v before any signal", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := e.signal(); err != nil {
		t.Fatalf("signal: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after a signal")
	}
	var buf [8]byte
	if _, err := unix.Read(e.fd, buf[:]); err != unix.EAGAIN {
		t.Errorf("counter after wait: read gave %v, want EAGAIN (consumed)", err)
	}
}

func TestEventFDClose(t *testing.T) {
	e := newTestEventFD(t)
	fd := e.fd
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("descriptor after Close: fcntl gave %v, want EBADF", err)
	}
	if err := e.signal(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("signal after Close: %v, want os.ErrClosed", err)
	}
	if err := e.wait(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("wait after Close: %v, want os.ErrClosed", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestEventFDCloseWaitsForWait: Close never closes the descriptor under a
// wait still polling its number; the waiter is woken by a signal first,
// as a ring's stop does.
func TestEventFDCloseWaitsForWait(t *testing.T) {
	// A wait that had not started polling when Close took the lock fails
	// with os.ErrClosed and proves nothing: try again with a new one.
	for attempt := 1; attempt <= 5; attempt++ {
		if closeDuringWait(t) {
			return
		}
	}
	t.Fatal("the wait never started polling before Close in 5 attempts")
}

// closeDuringWait closes an eventfd while a wait polls it and checks both
// return once the eventfd is signalled. It reports false if the wait had
// not started in time.
func closeDuringWait(t *testing.T) bool {
	e := newTestEventFD(t)
	fd := e.fd
	waited := make(chan error, 1)
	go func() { waited <- e.wait() }()
	time.Sleep(20 * time.Millisecond) // let the wait start polling
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	select {
	case err := <-closed:
		werr := <-waited
		if errors.Is(werr, os.ErrClosed) {
			return false
		}
		t.Fatalf("Close returned (%v) while a wait was polling the descriptor; the wait got %v", err, werr)
	case <-time.After(50 * time.Millisecond):
	}
	// The pending Close blocks new uses, so signal the descriptor
	// directly, as the ring's stop does through signal beforehand.
	var one [8]byte
	one[0] = 1
	if _, err := unix.Write(fd, one[:]); err != nil {
		t.Fatalf("write: %v", err)
	}
	for _, ch := range []chan error{waited, closed} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("wait or Close did not return after the signal")
		}
	}
	return true
}

// TestEventFDOutsideNetpoller: the front-end's eventfds must stay out of
// Go's network poller (see eventFD), and their non-blocking flag, which
// the front-end shares, is left alone.
func TestEventFDOutsideNetpoller(t *testing.T) {
	e := newTestEventFD(t)
	if err := e.signal(); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	// Make sure the runtime's poller exists, so the check below can fail.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	r.SetReadDeadline(time.Now().Add(time.Millisecond))

	polled, found := epollTargets(t)
	if !found {
		t.Fatal("no epoll descriptor in this process: cannot check the network poller")
	}
	if !polled[int(r.Fd())] {
		t.Fatalf("the pipe %d is not in the network poller's set %v: the check does not work", r.Fd(), polled)
	}
	if polled[e.fd] {
		t.Errorf("eventfd %d is registered with Go's network poller", e.fd)
	}
	fl, err := unix.FcntlInt(uintptr(e.fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Error("the eventfd's O_NONBLOCK was cleared; it is shared with the front-end")
	}
}

// epollTargets lists the descriptors registered with any epoll instance of
// this process, from /proc/self/fdinfo.
func epollTargets(t *testing.T) (map[int]bool, bool) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing this process's descriptors: %v", err)
	}
	targets := map[int]bool{}
	found := false
	for _, ent := range ents {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name()))
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", ent.Name()))
		if err != nil {
			continue
		}
		found = true
		for _, line := range strings.Split(string(info), "\n") {
			var tfd int
			if _, err := fmt.Sscanf(line, "tfd: %d", &tfd); err == nil {
				targets[tfd] = true
			}
		}
	}
	return targets, found
}

//go:build linux

package virtiofs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// DefaultSocketMode is the socket's mode when Server.SocketMode is 0:
// only the daemon's user may connect. Give a VMM running as another user
// access with SocketOwner and a group-writable mode.
const DefaultSocketMode fs.FileMode = 0o600

// DefaultMaxWrite is the FUSE max_write (and so the largest READ, in
// max_pages) offered to guests when Server.MountOptions is nil: 1 MiB,
// the kernel's limit unless the host raised fs.fuse.max_pages_limit.
const DefaultMaxWrite = 1 << 20

// Server is a vhost-user-fs back-end: it listens on a unix socket, and
// every VMM that connects gets its own session serving the guest's FUSE
// requests from FileSystem.
//
// Set the exported fields, then call Listen (optional) and Serve; Close
// or cancelling Serve's context stops it. A Server must not be copied or
// reused after Serve returns.
type Server struct {
	// Socket is the unix socket path the VMM connects to (QEMU's
	// -chardev socket,path=SOCKET; cloud-hypervisor's --fs socket=SOCKET).
	// A stale socket file there is replaced; any other file, or a socket
	// another server still answers on, is an error.
	Socket string

	// Tag is the name the guest mounts (mount -t virtiofs TAG DIR). The
	// VMM announces it to the guest (QEMU's vhost-user-fs-pci tag=,
	// cloud-hypervisor's --fs tag=), so the server only logs it.
	Tag string

	// FileSystem returns the RawFileSystem one guest mount is served
	// from. It is called at every FUSE_INIT — each VM connection and
	// each mount after an unmount or a guest reboot starts from a fresh
	// node table, so node IDs and lookup counts are never shared between
	// guests or mounts. Required.
	FileSystem func() fuse.RawFileSystem

	// MountOptions are go-fuse's options for each mount's protocol
	// server (MaxWrite, capabilities, Logger...). nil means MaxWrite
	// DefaultMaxWrite, symlink caching on and go-fuse's messages logged
	// through Logger.
	MountOptions *fuse.MountOptions

	// SocketMode is the socket's permission bits; 0 means
	// DefaultSocketMode.
	SocketMode fs.FileMode

	// SocketOwner, if not nil, is the socket's owner and group.
	SocketOwner *SocketOwner

	// Workers is how many requests of one request queue are served at
	// once; 0 means twice GOMAXPROCS. The high-priority queue (FORGET,
	// INTERRUPT) is served one request at a time.
	Workers int

	// Logger receives one line per VMM connection, disconnection and
	// protocol violation; nil means slog.Default().
	Logger *slog.Logger

	mu        sync.Mutex
	ln        *net.UnixListener
	conns     map[*conn]struct{}
	closed    bool
	serving   bool
	closing   chan struct{} // closed by shutdown
	serveDone chan struct{} // closed when Serve has stopped everything
}

// SocketOwner is a numeric user and group ID.
type SocketOwner struct {
	UID, GID int
}

// Listen creates the socket, so that a caller learns about a bad path or
// a socket in use before it starts Serve in a goroutine, and a VMM may
// connect as soon as Listen returns. Serve calls it if it was not called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("virtiofs: listening on %s: %w", s.Socket, net.ErrClosed)
	}
	if s.ln != nil {
		return nil
	}
	if s.Socket == "" {
		return errors.New("virtiofs: no socket path")
	}
	if err := removeStaleSocket(s.Socket); err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.Socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("virtiofs: listening on %s: %w", s.Socket, err)
	}
	mode := s.SocketMode
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if err := os.Chmod(s.Socket, mode.Perm()); err != nil {
		ln.Close()
		return fmt.Errorf("virtiofs: setting the mode of %s: %w", s.Socket, err)
	}
	if o := s.SocketOwner; o != nil {
		if err := os.Lchown(s.Socket, o.UID, o.GID); err != nil {
			ln.Close()
			return fmt.Errorf("virtiofs: setting the owner of %s: %w", s.Socket, err)
		}
	}
	s.ln = ln
	s.closing = make(chan struct{})
	s.conns = map[*conn]struct{}{}
	return nil
}

// removeStaleSocket removes a socket file at path that nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("virtiofs: checking %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("virtiofs: %s exists and is not a socket (%v); refusing to replace it", path, fi.Mode().Type())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("virtiofs: socket %s is in use by another server", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("virtiofs: removing the stale socket %s: %w", path, err)
	}
	return nil
}

// Serve accepts VMM connections and serves each in its own session until
// ctx is cancelled or Close is called; then it ends every session,
// removes the socket and returns nil. A VMM that disconnects or breaks
// the protocol ends only its own session. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if s.FileSystem == nil {
		return errors.New("virtiofs: Server.FileSystem is nil")
	}
	if err := s.Listen(); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("virtiofs: Serve called twice")
	}
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.serving = true
	s.serveDone = make(chan struct{})
	ln, closing := s.ln, s.closing
	s.mu.Unlock()
	defer close(s.serveDone)

	cfg := s.connConfig()
	cfg.log.Info("virtiofs: serving", "tag", s.Tag)
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.shutdown()
	backoff := time.Duration(0)
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			select {
			case <-closing:
				return nil
			default:
			}
			// Out of descriptors and the like: wait and retry, as
			// net/http does, rather than lose the socket.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			cfg.log.Error("virtiofs: accepting a VMM connection", "err", err, "retry_in", backoff)
			select {
			case <-closing:
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		c := newConn(uc, cfg)
		if !s.track(c) {
			uc.Close()
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.untrack(c)
			c.serve()
		}()
	}
}

func (s *Server) connConfig() connConfig {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("socket", s.Socket)
	var opts fuse.MountOptions
	if s.MountOptions != nil {
		opts = *s.MountOptions
	} else {
		opts = fuse.MountOptions{MaxWrite: DefaultMaxWrite, EnableSymlinkCaching: true}
	}
	workers := s.Workers
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	return connConfig{newFS: s.FileSystem, opts: opts, workers: workers, log: log}
}

// track registers a session so shutdown can end it; false if the server
// is closing.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// shutdown closes the listener (which removes the socket) and every
// session's connection; it does not wait.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.ln != nil {
		// closing first: Serve tells a shutdown from an accept error by it.
		close(s.closing)
		s.ln.Close()
	}
	for c := range s.conns {
		c.close()
	}
}

// Close stops the server: the socket is removed, every VMM session ends
// (their guests see the device stop answering) and, if Serve is running,
// Close waits for it to return. It may be called more than once and
// before Serve.
func (s *Server) Close() error {
	s.shutdown()
	s.mu.Lock()
	done := s.serveDone
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

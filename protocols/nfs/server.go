package nfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/storefs/storefs/vfs"
)

// ErrServerClosed is returned by Server.Serve after Close.
var ErrServerClosed = errors.New("nfs: server closed")

// Server serves one vfs.FS over NFSv3 and MOUNT v3 on the listeners given to
// Serve. Close stops it: listeners, connections and every goroutine.
type Server struct {
	fs   *vfs.FS
	opts Options
	log  *slog.Logger

	ctx    context.Context // bounds every store call; cancelled by Close
	cancel context.CancelFunc

	handles   *lru.Cache[string, vfs.Node]
	routes    routeTable
	replyBufs sync.Pool // *[]byte of replyBufSize: READ replies are built in place
	// replyBudget holds one token per reply buffer in use, at most
	// MaxReplyMemory/replyBufSize of them.
	replyBudget chan struct{}

	wg        sync.WaitGroup
	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}

	spliced atomic.Int64 // READ replies sent with sendfile, for tests
}

// New returns a Server over fsys. It starts nothing until Serve.
func New(fsys *vfs.FS, opts Options) (*Server, error) {
	if fsys == nil {
		return nil, errors.New("nfs: no filesystem")
	}
	opts = opts.withDefaults()
	handles, err := lru.New[string, vfs.Node](opts.HandleCacheSize)
	if err != nil {
		return nil, fmt.Errorf("nfs: handle cache: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bufSize := replyBufSize(opts)
	return &Server{
		replyBufs: sync.Pool{New: func() any {
			b := make([]byte, 0, bufSize)
			return &b
		}},
		replyBudget: make(chan struct{}, max(opts.MaxReplyMemory/bufSize, 1)),
		fs:          fsys,
		opts:        opts,
		log:         opts.Logger,
		ctx:         ctx,
		cancel:      cancel,
		handles:     handles,
		routes:      defaultRoutes(),
		listeners:   make(map[net.Listener]struct{}),
		conns:       make(map[*conn]struct{}),
	}, nil
}

// Serve is New followed by Server.Serve on lis until ctx is done; it then
// closes the server and returns nil.
func Serve(ctx context.Context, lis net.Listener, fsys *vfs.FS, opts Options) error {
	s, err := New(fsys, opts)
	if err != nil {
		lis.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	err = s.Serve(lis)
	s.Close()
	if errors.Is(err, ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return err
}

// Serve accepts connections on lis (TCP; MOUNT and NFS share it) and serves
// each in its own goroutine until lis fails or Close is called, then returns
// (ErrServerClosed after Close). It closes lis.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
		lis.Close()
	}()
	s.log.Info("nfs: serving", "addr", lis.Addr().String())
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("nfs: accept on %s: %w", lis.Addr(), err)
		}
		s.admit(nc)
	}
}

// admit starts serving a new connection. Admission (allow-list,
// connection cap, handshake and idle deadlines) is the listener's: the
// daemon wraps every listener in a netguard.Listener.
func (s *Server) admit(nc net.Conn) {
	c := s.newConn(nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// Close stops the server: it closes every listener and connection, cancels
// store calls in progress and waits for every goroutine it started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for lis := range s.listeners {
		lis.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

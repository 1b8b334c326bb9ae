package ninep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storefs/storefs/internal/clientstr"
	"github.com/storefs/storefs/vfs"
)

// DefaultAddr is where `storefs serve --9p` listens unless told otherwise:
// loopback only, the standard 9P port.
const DefaultAddr = "127.0.0.1:564"

// Defaults for the zero fields of Options.
const (
	DefaultMaxMsize      = 1 << 20 // 1 MiB: Linux asks for at most 512 KiB (virtio) or 1 MiB
	DefaultMaxFids       = 65536
	DefaultMaxServerFids = 1 << 18
	DefaultMaxRequests   = 256
	DefaultMaxReadBytes  = 4 << 20

	// DefaultWriteTimeout is how long a reply may wait for the client to
	// take it. Linux v9fs reads replies in the kernel whatever its
	// processes do, so a live client takes one within milliseconds and
	// its socket buffers hold several; only a dead, stopped or hostile
	// peer leaves a reply waiting this long. A minute also covers a VM
	// paused briefly (a snapshot, a migration).
	DefaultWriteTimeout = time.Minute

	// DefaultMessageTimeout is how long the rest of a message may take to
	// arrive once its first byte has: a 9P client writes each request
	// whole, so the bytes of one message arrive together.
	DefaultMessageTimeout = 10 * time.Second
)

// MinMsize is the smallest msize a client may ask for (Linux's own
// minimum); a smaller one gets Rversion "unknown".
const MinMsize = 4096

// maxMsize is the largest msize the server grants: a Tread's reply is
// built in one buffer of msize bytes.
const maxMsize = 4 << 20

// Options configure a Server. The zero value is the documented default of
// every option.
type Options struct {
	// MaxMsize is the largest msize granted in Rversion; a client asking
	// for more gets this. Default DefaultMaxMsize; at most 4 MiB.
	MaxMsize uint32

	// MaxFids bounds the walk-path entries one connection's fids hold; a
	// request that would make more gets Rlerror EMFILE. A fid keeps the
	// path it was walked along (for ".."), one entry per name a walk
	// passed through, each holding its parent, until the fid and every
	// fid walked from it are clunked: a fid made by a Twalk of n names
	// counts n, a clone (no names), an xattr fid or a Tattach 1 (fids.go).
	// Linux v9fs walks one name at a time from the parent's fid and holds
	// one fid per cached dentry and open file, so for it this is its fid
	// count. Each entry costs about 0.3 KiB of heap with its fid, less
	// for fids made by long walks (measured by TestFidMemory: 260 bytes
	// per fid of one name), so the default DefaultMaxFids, 65 536, is
	// about 16 MiB per connection. It stays that high because a guest
	// mounting with cache=loose keeps a fid per cached dentry: tens of
	// thousands after walking a large closure, and v9fs does not give fids
	// back when refused.
	MaxFids int

	// MaxServerFids bounds the walk-path entries of all connections
	// together, counted as MaxFids counts them: beyond it requests that
	// would make more get EMFILE, so that many connections, each within
	// MaxFids, cannot hold more than this (about 0.3 KiB each). Each
	// connection may hold its first 1 024 whatever the others hold, so
	// that a new mount is served while others hold the rest: the bound is
	// MaxServerFids plus 1 024 per connection (0.3 MiB each). Default
	// DefaultMaxServerFids (262 144, about 80 MiB: four connections at
	// MaxFids, or many mounts of a few thousand fids each).
	MaxServerFids int

	// MaxRequests is how many requests of one connection are handled at
	// once, each in a goroutine of its own (requests answered without a
	// store call, such as Tgetattr, are answered in turn and do not
	// count); the connection is not read further until one is answered.
	// Default DefaultMaxRequests.
	MaxRequests int

	// MaxReadBytes bounds the read buffers of one connection: every Tread
	// and Treaddir in flight may hold a buffer of msize bytes until its
	// reply is sent, so at most MaxReadBytes/msize of them (at least one)
	// are handled at once; the connection is read no further until one is
	// answered. Default DefaultMaxReadBytes (4 MiB: 4 reads of 1 MiB in
	// flight, 64 of 64 KiB; with MaxRequests alone a client that takes no
	// replies could pin 256 MiB per connection until WriteTimeout).
	MaxReadBytes int

	// WriteTimeout bounds how long sending one reply may take; a client
	// that does not take its replies for this long (its socket buffers
	// full) loses the connection, which frees the goroutines and buffers
	// its requests hold. Default DefaultWriteTimeout; negative: none.
	WriteTimeout time.Duration

	// MessageTimeout bounds how long a message may take to arrive once
	// its first byte has; a connection stalled in the middle of a message
	// is closed. Waiting for the next message is not bounded (an idle
	// mount stays; netguard's idle timeout, off by default for 9P, is the
	// bound there). Default DefaultMessageTimeout; negative: none.
	MessageTimeout time.Duration

	// NoSendfile sends every Rread from memory, read into a buffer. By
	// default (on Linux) a read of at least 16 KiB
	// from a blob stored as a local file is sent with sendfile(2), page
	// cache to socket; this option is for comparison and debugging.
	NoSendfile bool

	// Logger receives one line per refused connection, protocol violation
	// and connection event (debug), with the client address. Default
	// slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxMsize == 0 {
		o.MaxMsize = DefaultMaxMsize
	}
	o.MaxMsize = min(max(o.MaxMsize, MinMsize), maxMsize)
	if o.MaxFids <= 0 {
		o.MaxFids = DefaultMaxFids
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.MaxServerFids <= 0 {
		o.MaxServerFids = DefaultMaxServerFids
	}
	if o.MaxReadBytes <= 0 {
		o.MaxReadBytes = DefaultMaxReadBytes
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MessageTimeout == 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Server serves one vfs.FS over 9P2000.L on any number of listeners. Its
// methods may be called concurrently.
type Server struct {
	fs   *vfs.FS
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // connection goroutines

	spliced atomic.Int64 // Rread replies sent with sendfile (tests look)
	fids    fidBudget    // walk-path entries of all connections (fids.go)
}

// New returns a Server of fs. It serves nothing until Serve.
func New(fs *vfs.FS, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{
		fs:        fs,
		opts:      opts,
		log:       opts.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		fids:      fidBudget{max: int64(opts.MaxServerFids)},
	}
}

// Serve is New(fs, opts).Serve(ctx, lis): it serves until ctx is done or
// the listener fails, and returns once every connection is closed.
func Serve(ctx context.Context, lis net.Listener, fs *vfs.FS, opts Options) error {
	s := New(fs, opts)
	defer s.Close()
	return s.Serve(ctx, lis)
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("ninep: server closed")

// Serve accepts connections on lis and serves each until it ends, ctx is
// done or Close is called. It closes lis. It returns nil when ctx is done,
// ErrServerClosed after Close, or the listener's error; in every case only
// after the connections it accepted are closed and their goroutines have
// returned.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	s.log.Info("ninep: serving 9P2000.L", "addr", lis.Addr().String(), "max_msize", s.opts.MaxMsize)

	ctx, cancel := context.WithCancel(ctx)
	var mine sync.WaitGroup // this Serve's connections and its watcher
	mine.Add(1)
	go func() { // closes the listener (and so ends Accept) when ctx is done
		defer mine.Done()
		<-ctx.Done()
		lis.Close()
	}()
	defer func() {
		cancel()
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
		mine.Wait()
	}()

	var delay time.Duration
	for {
		conn, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("ninep: accept on %s: %w", lis.Addr(), err)
			}
			// Out of file descriptors, a connection aborted before accept:
			// keep serving the others, backing off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("ninep: accept failed; retrying", "addr", lis.Addr().String(), "err", err, "delay", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		wc, ok := s.admit(ctx, conn)
		if !ok {
			continue
		}
		mine.Add(1)
		go func() {
			defer mine.Done()
			s.serveConn(ctx, wc)
		}()
	}
}

// admit tracks a new connection. Admission (allow-list, connection cap,
// handshake and idle deadlines) is the listener's: the daemon wraps every
// listener in a netguard.Listener.
func (s *Server) admit(ctx context.Context, conn net.Conn) (*conn, bool) {
	wc := newConn(s, conn)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || ctx.Err() != nil {
		conn.Close()
		return nil, false
	}
	s.conns[wc] = struct{}{}
	s.wg.Add(1)
	return wc, true
}

// panicLog logs the panics recovered on one connection.
type panicLog struct {
	logger *slog.Logger
	n      atomic.Int32
}

// log logs a recovered panic at Error, with the stack if it is the
// connection's first: a client that can cause one can cause many.
func (p *panicLog) log(msg, request string, v any) {
	args := []any{"request", request, "panic", clientstr.Trim(fmt.Sprint(v))}
	if p.n.Add(1) == 1 {
		args = append(args, "stack", string(debug.Stack()))
	}
	p.logger.Error(msg, args...)
}

// serveConn serves one connection until it ends or ctx is done.
func (s *Server) serveConn(ctx context.Context, c *conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c.log.Debug("ninep: connection")
	c.serve(ctx)
	c.log.Debug("ninep: connection closed")
}

// Close stops every Serve, closes every connection and waits until their
// goroutines have returned. Requests in progress get their replies if the
// client still reads them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for lis := range s.listeners {
		lis.Close()
	}
	for wc := range s.conns {
		wc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

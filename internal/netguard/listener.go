package netguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options say how a Listener admits and bounds connections. The zero value
// admits loopback and unix-socket clients without limits.
type Options struct {
	// Protocol names the listener in log lines ("nfs", "ninep").
	Protocol string

	// Allow lists the client networks admitted besides loopback and unix
	// sockets; nil admits no others.
	Allow *AllowList

	// MaxConns bounds the open connections; at the cap the least recently
	// active one is closed to admit a new one (connections that have not
	// completed a message first). Zero or less: no bound.
	MaxConns int

	// HandshakeTimeout closes a connection that has not completed its
	// first message this long after it was accepted. Zero or less: none.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a connection that has completed no message for
	// this long. Zero or less: none.
	IdleTimeout time.Duration

	// ActiveOnRead counts every read that returns bytes as a completed
	// message, for protocol servers that cannot call Active (HTTP, gRPC).
	ActiveOnRead bool

	// Logger receives one line per refused, evicted or timed-out
	// connection, with the client address. Default slog.Default().
	Logger *slog.Logger
}

// Reasons a Listener closes a connection, as counted in Stats.
const (
	ReasonRefused   = "refused"   // client network not allowed
	ReasonEvicted   = "evicted"   // closed at the cap to admit a new one
	ReasonHandshake = "handshake" // no first message in time
	ReasonIdle      = "idle"      // no message for IdleTimeout
)

// Stats counts what a Listener did.
type Stats struct {
	Open      int   // connections open now
	Accepted  int64 // connections admitted
	Refused   int64 // closed at accept: client network not allowed
	Evicted   int64 // closed at the cap to admit a new one
	Handshake int64 // closed: no first message within HandshakeTimeout
	Idle      int64 // closed: no message within IdleTimeout
}

// Listener wraps a net.Listener: Accept returns only admitted
// connections, as *Conn, and the Listener closes the ones that overstay.
// Its methods may be called concurrently.
type Listener struct {
	inner net.Listener
	opts  Options
	log   *slog.Logger
	epoch time.Time // monotonic origin of Conn times

	mu    sync.Mutex
	conns map[*Conn]struct{}

	stopOnce, closeOnce sync.Once
	stopped, closed     chan struct{}
	reaperDone          chan struct{}

	accepted, refused, evicted, handshake, idle atomic.Int64

	logMu      sync.Mutex
	logTokens  float64
	logLast    time.Duration
	suppressed int
}

// The lines a Listener logs about the connections it refuses or closes
// are rate-limited, so that a flood of connections does not flood the log:
// a burst of logBurst lines, then logRate a second; the lines left out are
// counted in the next one logged (suppressed=N) and in Stats.
const (
	logBurst = 20
	logRate  = 5
)

// logEvent logs one line about a connection, unless the rate is spent.
func (l *Listener) logEvent(level slog.Level, msg string, args ...any) {
	now := l.now()
	l.logMu.Lock()
	l.logTokens = min(logBurst, l.logTokens+(now-l.logLast).Seconds()*logRate)
	l.logLast = now
	if l.logTokens < 1 {
		l.suppressed++
		l.logMu.Unlock()
		return
	}
	l.logTokens--
	suppressed := l.suppressed
	l.suppressed = 0
	l.logMu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// New wraps lis. If opts has a timeout, a goroutine checks the connections
// a few times per timeout until Close.
func New(lis net.Listener, opts Options) *Listener {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &Listener{
		inner:     lis,
		opts:      opts,
		log:       opts.Logger,
		epoch:     time.Now(),
		conns:     make(map[*Conn]struct{}),
		logTokens: logBurst,
		stopped:   make(chan struct{}),
		closed:    make(chan struct{}),
	}
	if tick := reapInterval(opts); tick > 0 {
		l.reaperDone = make(chan struct{})
		go l.reap(tick)
	}
	return l
}

// reapInterval is how often connections are checked against the
// timeouts: a quarter of the shorter one, within [10ms, 1s]; 0 for none.
func reapInterval(o Options) time.Duration {
	t := o.HandshakeTimeout
	if o.IdleTimeout > 0 && (t <= 0 || o.IdleTimeout < t) {
		t = o.IdleTimeout
	}
	if t <= 0 {
		return 0
	}
	return min(max(t/4, 10*time.Millisecond), time.Second)
}

// now is the monotonic time since the Listener was made.
func (l *Listener) now() time.Duration { return time.Since(l.epoch) }

// Accept waits for the next connection that the allow-list admits, makes
// room for it at the cap, and returns it as a *Conn. After Stop it blocks
// until Close, then returns net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.stopped:
				<-l.closed
				return nil, net.ErrClosed
			default:
				return nil, err
			}
		}
		if !l.opts.Allow.Allows(nc.RemoteAddr()) {
			l.refused.Add(1)
			l.logEvent(slog.LevelWarn, l.opts.Protocol+": connection refused: client network not allowed",
				"client", nc.RemoteAddr().String(), "addr", l.inner.Addr().String())
			nc.Close()
			continue
		}
		c := &Conn{Conn: nc, l: l, accepted: int64(l.now())}
		c.last.Store(c.accepted)
		l.admit(c)
		l.accepted.Add(1)
		return c, nil
	}
}

// admit adds c to the open connections, closing the least recently active
// one first if the cap is reached.
func (l *Listener) admit(c *Conn) {
	l.mu.Lock()
	var victim *Conn
	if l.opts.MaxConns > 0 && len(l.conns) >= l.opts.MaxConns {
		victim = l.leastActiveLocked()
		delete(l.conns, victim)
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		l.logEvent(slog.LevelWarn, l.opts.Protocol+": connection closed to admit a new one: too many connections",
			"client", victim.RemoteAddr().String(), "new_client", c.RemoteAddr().String(),
			"max", l.opts.MaxConns, "idle", (l.now() - time.Duration(victim.last.Load())).Round(time.Millisecond))
		victim.Conn.Close()
	}
}

// leastActiveLocked picks the connection to evict: among those that have
// not completed a message the oldest, else the least recently active.
func (l *Listener) leastActiveLocked() *Conn {
	var best *Conn
	for c := range l.conns {
		if best == nil || c.evictBefore(best) {
			best = c
		}
	}
	return best
}

// evictBefore orders connections for eviction.
func (c *Conn) evictBefore(o *Conn) bool {
	ch, oh := c.handshaken.Load(), o.handshaken.Load()
	if ch != oh {
		return !ch
	}
	return c.last.Load() < o.last.Load()
}

// reap closes, every tick, the connections past a deadline.
func (l *Listener) reap(tick time.Duration) {
	defer close(l.reaperDone)
	t := time.NewTicker(tick)
	defer t.Stop()
	var expired []*Conn
	var reasons []string
	for {
		select {
		case <-l.closed:
			return
		case <-t.C:
		}
		now := l.now()
		expired, reasons = expired[:0], reasons[:0]
		l.mu.Lock()
		for c := range l.conns {
			if r := c.expired(now); r != "" {
				delete(l.conns, c)
				expired, reasons = append(expired, c), append(reasons, r)
			}
		}
		l.mu.Unlock()
		for i, c := range expired {
			switch reasons[i] {
			case ReasonHandshake:
				l.handshake.Add(1)
				l.logEvent(slog.LevelInfo, l.opts.Protocol+": connection closed: no complete message in time",
					"client", c.RemoteAddr().String(), "timeout", l.opts.HandshakeTimeout)
			case ReasonIdle:
				l.idle.Add(1)
				l.logEvent(slog.LevelInfo, l.opts.Protocol+": connection closed: idle too long",
					"client", c.RemoteAddr().String(), "timeout", l.opts.IdleTimeout)
			}
			c.Conn.Close()
		}
	}
}

// expired says why c is past a deadline at now, or "".
func (c *Conn) expired(now time.Duration) string {
	o := c.l.opts
	if !c.handshaken.Load() {
		if o.HandshakeTimeout > 0 && now-time.Duration(c.accepted) > o.HandshakeTimeout {
			return ReasonHandshake
		}
		return ""
	}
	if o.IdleTimeout > 0 && now-time.Duration(c.last.Load()) > o.IdleTimeout {
		return ReasonIdle
	}
	return ""
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Stop closes the socket, so that no new client connects and the address
// is free, while Accept keeps blocking until Close: a protocol server goes
// on serving the connections it has (a drain). Open connections are still
// bounded by the timeouts.
func (l *Listener) Stop() {
	l.stopOnce.Do(func() {
		close(l.stopped)
		l.inner.Close()
	})
}

// Close closes the socket, ends Accept and stops the timeouts; it leaves
// the accepted connections to their owner.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	l.Stop()
	if l.reaperDone != nil {
		<-l.reaperDone
	}
	return nil
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Open:      open,
		Accepted:  l.accepted.Load(),
		Refused:   l.refused.Load(),
		Evicted:   l.evicted.Load(),
		Handshake: l.handshake.Load(),
		Idle:      l.idle.Load(),
	}
}

// Conn is a connection admitted by a Listener. Closing it frees its slot.
type Conn struct {
	net.Conn
	l          *Listener
	accepted   int64        // monotonic ns
	last       atomic.Int64 // monotonic ns of the last completed message
	handshaken atomic.Bool
	closeOnce  sync.Once
}

// Active records that a whole message has arrived: the handshake is done
// and the idle clock starts again.
func (c *Conn) Active() {
	c.last.Store(int64(c.l.now()))
	if !c.handshaken.Load() {
		c.handshaken.Store(true)
	}
}

// Read reads from the connection; with ActiveOnRead, bytes read count as
// activity.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.l.opts.ActiveOnRead {
		c.Active()
	}
	return n, err
}

// Close closes the connection and frees its slot.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// SyscallConn returns the socket's raw connection, so that a protocol can
// send file data with sendfile(2) through a guarded connection; it fails
// if the accepted connection has none. Bytes moved through it are not
// seen by Read, which matters only with ActiveOnRead.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("netguard: %T has no raw connection: %w", c.Conn, errors.ErrUnsupported)
	}
	return sc.SyscallConn()
}

// activer is a connection that can record a completed message.
type activer interface{ Active() }

// Active records that a whole message has arrived on nc, if nc came from a
// Listener (or wraps such a connection and forwards Active); otherwise it
// does nothing.
func Active(nc net.Conn) {
	if a, ok := nc.(activer); ok {
		a.Active()
	}
}

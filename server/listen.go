package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/storefs/storefs/config"
)

// allowList is a set of client networks that can be replaced while
// listeners use it (SIGHUP). Loopback and unix-socket clients are always
// allowed.
type allowList struct {
	nets atomic.Pointer[[]netip.Prefix]
}

func newAllowList(nets []netip.Prefix) *allowList {
	a := &allowList{}
	a.set(nets)
	return a
}

func (a *allowList) set(nets []netip.Prefix) { a.nets.Store(&nets) }

func (a *allowList) allows(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return true // a unix socket: its file mode decides
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	for _, p := range *a.nets.Load() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// anyNetwork lets every client through a protocol package's own check when
// a gate in front of it decides.
var anyNetwork = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// gate wraps a listener of a frontend:
//   - Accept closes, with a log line, connections from outside the allow
//     list (when there is one);
//   - Stop closes the socket (no new clients, the port is free) while
//     Accept keeps blocking, so that the protocol server goes on serving
//     the connections it has until it is closed: the drain;
//   - Close ends Accept.
type gate struct {
	net.Listener
	allow *allowList // nil: every client
	log   *slog.Logger

	stopOnce, closeOnce sync.Once
	stopped, closed     chan struct{}
}

func newGate(lis net.Listener, allow *allowList, log *slog.Logger) *gate {
	return &gate{Listener: lis, allow: allow, log: log, stopped: make(chan struct{}), closed: make(chan struct{})}
}

// Accept returns the next allowed connection.
func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			select {
			case <-g.stopped:
				<-g.closed
				return nil, net.ErrClosed
			default:
				return nil, err
			}
		}
		if g.allow != nil && !g.allow.allows(c.RemoteAddr()) {
			g.log.Warn("connection refused: client network not allowed", "client", c.RemoteAddr().String(), "addr", g.Addr().String())
			c.Close()
			continue
		}
		return c, nil
	}
}

// Stop closes the socket; Accept blocks until Close.
func (g *gate) Stop() {
	g.stopOnce.Do(func() {
		close(g.stopped)
		g.Listener.Close()
	})
}

// Close closes the socket and ends Accept.
func (g *gate) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	g.Stop()
	return nil
}

// listen opens a TCP or unix listener for a parsed address. A unix socket
// file left by a daemon that is gone is removed first.
func listen(l config.Listen) (net.Listener, error) {
	if l.Unix == "" {
		return net.Listen("tcp", l.String())
	}
	if fi, err := os.Lstat(l.Unix); err == nil && fi.Mode()&os.ModeSocket != 0 {
		c, err := net.Dial("unix", l.Unix)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process serves this socket", l.Unix)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(l.Unix)
		}
	}
	return net.Listen("unix", l.Unix)
}

package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/peer"
)

// DefaultAddr is where Listen binds when given no address: loopback only.
const DefaultAddr = "127.0.0.1:0"

// Listen opens the listener of a gRPC server.
//
//	""                    DefaultAddr (loopback, a free port)
//	HOST:PORT             TCP; HOST must be a loopback address unless allow is set
//	:PORT, 0.0.0.0:PORT   all interfaces: needs allow
//	unix:PATH, /PATH      a unix socket (access is governed by its file mode)
//
// allow lists the client networks that may connect to a TCP listener; a
// connection from elsewhere is closed as soon as it is accepted, with a
// log line. With an empty allow only loopback clients are accepted, and
// only loopback addresses may be bound.
func Listen(addr string, allow []netip.Prefix, logger *slog.Logger) (net.Listener, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if addr == "" {
		addr = DefaultAddr
	}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok || strings.HasPrefix(addr, "/") {
		if !ok {
			path = addr
		}
		lis, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("grpc: listen on unix socket %s: %w", path, err)
		}
		return lis, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("grpc: listen address %q: %w (want HOST:PORT, :PORT or unix:PATH)", addr, err)
	}
	if len(allow) == 0 {
		ip, err := netip.ParseAddr(host)
		if host == "localhost" {
			ip, err = netip.MustParseAddr("127.0.0.1"), nil
			addr = "127.0.0.1" + addr[len(host):]
		}
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("grpc: listen address %q is not loopback: serving other hosts needs an allow-list of client networks", addr)
		}
		allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("grpc: listen on %s: %w", addr, err)
	}
	return AllowListener(lis, allow, logger), nil
}

// AllowListener wraps a TCP listener so that Accept closes, with a log
// line, every connection whose remote address is in none of allow.
func AllowListener(lis net.Listener, allow []netip.Prefix, logger *slog.Logger) net.Listener {
	if logger == nil {
		logger = slog.Default()
	}
	return &allowListener{Listener: lis, allow: allow, log: logger}
}

type allowListener struct {
	net.Listener
	allow []netip.Prefix
	log   *slog.Logger
}

func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ok, addr := l.allowed(c.RemoteAddr())
		if ok {
			return c, nil
		}
		l.log.Warn("grpc: refused connection from a client outside the allow-list", "client", addr, "listener", l.Addr().String())
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.log.Debug("grpc: close refused connection", "err", err)
		}
	}
}

func (l *allowListener) allowed(a net.Addr) (bool, string) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false, a.String()
	}
	ip := ap.Addr().Unmap()
	for _, p := range l.allow {
		if p.Contains(ip) {
			return true, ap.String()
		}
	}
	return false, ap.String()
}

// peerAddr returns the client address of a call, or "".
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

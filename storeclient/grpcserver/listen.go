package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/peer"

	"github.com/storefs/storefs/internal/netguard"
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
// allow lists the client networks besides loopback that may connect to a
// TCP listener; a connection from elsewhere is closed as soon as it is
// accepted, with a log line (a netguard.Listener, as every storefs
// listener). With an empty allow only loopback addresses may be bound.
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
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("grpc: listen address %q: %w (want HOST:PORT, :PORT or unix:PATH)", addr, err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("grpc: listen on %s: %w", addr, err)
	}
	allowed := netguard.NewAllowList(allow)
	if err := netguard.CheckListenAddr(lis.Addr(), allowed); err != nil {
		lis.Close()
		return nil, fmt.Errorf("grpc: %w", err)
	}
	return netguard.New(lis, netguard.Options{
		Protocol:     "grpc",
		Allow:        allowed,
		ActiveOnRead: true,
		Logger:       logger,
	}), nil
}

// peerAddr returns the client address of a call, or "".
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/internal/netguard"
	"github.com/storefs/storefs/protocols/nfs"
	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/vfs"
)

// Frontend is one thing the daemon serves: a FUSE mount, a protocol
// server on a listener, or the metrics endpoint.
type Frontend interface {
	// Name is the protocol ("fuse", "nfs", "ninep", "virtiofs", "grpc",
	// "metrics").
	Name() string
	// Start binds or mounts and starts serving in goroutines the frontend
	// owns. It returns once clients can connect, or with an error and
	// nothing left bound or mounted.
	Start(ctx context.Context) error
	// Addr is where it serves (an address, a socket or a mountpoint), once
	// started.
	Addr() string
	// Usage tells a person how to use it: a mount command, a URL.
	Usage() string
	// Shutdown stops taking new clients, waits until ctx is done for the
	// requests in flight, then closes everything and waits for its
	// goroutines.
	Shutdown(ctx context.Context) error
}

// waitIdle waits until no vfs operation of protocol is in flight, or ctx
// is done.
func waitIdle(ctx context.Context, m *Metrics, protocol string) {
	if m.InFlight(protocol) == 0 {
		return
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for m.InFlight(protocol) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tcpPort returns the port of a TCP address ("" for others).
func tcpPort(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(ta.Port)
	}
	return ""
}

// tcpHost returns the host to print in mount commands for a listener: its
// address, or 127.0.0.1 when it listens on every interface.
func tcpHost(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ta.IP == nil || ta.IP.IsUnspecified() {
		return "127.0.0.1"
	}
	return ta.IP.String()
}

// nfsFrontend serves NFSv3 and MOUNT on one TCP port.
type nfsFrontend struct {
	cfg   config.NFS
	fs    *vfs.FS
	opts  nfs.Options
	guard netguard.Options
	m     *Metrics
	log   *slog.Logger

	gate *netguard.Listener
	srv  *nfs.Server
	done chan error
}

func (f *nfsFrontend) Name() string { return ProtoNFS }

func (f *nfsFrontend) Start(ctx context.Context) error {
	l, err := config.ParseListen(f.cfg.Listen, false)
	if err != nil {
		return fmt.Errorf("nfs.listen: %w", err)
	}
	srv, err := nfs.New(f.fs, f.opts)
	if err != nil {
		return err
	}
	lis, err := listen(l, f.guard)
	if err != nil {
		srv.Close()
		return fmt.Errorf("nfs: %w", err)
	}
	f.srv, f.gate, f.done = srv, lis, make(chan error, 1)
	f.m.addListener(ProtoNFS, lis)
	go func() { f.done <- srv.Serve(f.gate) }()
	return nil
}

func (f *nfsFrontend) Addr() string { return f.gate.Addr().String() }

func (f *nfsFrontend) Usage() string {
	a := f.gate.Addr()
	host, port := tcpHost(a), tcpPort(a)
	return fmt.Sprintf("mount -t nfs -o vers=3,tcp,port=%s,mountport=%s,nolock,ro %s:/ /mnt   (macOS: mount_nfs -o vers=3,tcp,port=%s,mountport=%s,nolocks,rdonly %s:/ /Volumes/nix)",
		port, port, host, port, port, host)
}

func (f *nfsFrontend) Shutdown(ctx context.Context) error {
	f.gate.Stop()
	waitIdle(ctx, f.m, ProtoNFS)
	f.srv.Close()
	if err := <-f.done; err != nil && !errors.Is(err, nfs.ErrServerClosed) {
		return fmt.Errorf("nfs: %w", err)
	}
	return nil
}

// ninepFrontend serves 9P2000.L on TCP or a unix socket.
type ninepFrontend struct {
	cfg   config.NineP
	fs    *vfs.FS
	opts  ninep.Options
	guard netguard.Options
	m     *Metrics
	log   *slog.Logger

	gate   *netguard.Listener
	srv    *ninep.Server
	cancel context.CancelFunc
	done   chan error
}

func (f *ninepFrontend) Name() string { return ProtoNineP }

func (f *ninepFrontend) Start(ctx context.Context) error {
	l, err := config.ParseListen(f.cfg.Listen, true)
	if err != nil {
		return fmt.Errorf("ninep.listen: %w", err)
	}
	lis, err := listen(l, f.guard)
	if err != nil {
		return fmt.Errorf("ninep: %w", err)
	}
	f.gate, f.done = lis, make(chan error, 1)
	f.m.addListener(ProtoNineP, lis)
	f.srv = ninep.New(f.fs, f.opts)
	sctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- f.srv.Serve(sctx, f.gate) }()
	return nil
}

func (f *ninepFrontend) Addr() string {
	if a := f.gate.Addr(); a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return f.gate.Addr().String()
}

func (f *ninepFrontend) Usage() string {
	a := f.gate.Addr()
	if a.Network() == "unix" {
		return fmt.Sprintf("mount -t 9p -o trans=unix,version=9p2000.L,ro %s /mnt", a.String())
	}
	return fmt.Sprintf("mount -t 9p -o trans=tcp,port=%s,version=9p2000.L,ro %s /mnt", tcpPort(a), tcpHost(a))
}

func (f *ninepFrontend) Shutdown(ctx context.Context) error {
	f.gate.Stop()
	waitIdle(ctx, f.m, ProtoNineP)
	f.cancel()
	f.srv.Close()
	if err := <-f.done; err != nil && !errors.Is(err, ninep.ErrServerClosed) {
		return fmt.Errorf("ninep: %w", err)
	}
	return nil
}

// grpcFrontend serves the store over the tvix/snix gRPC API.
type grpcFrontend struct {
	cfg   config.GRPC
	store storeclient.Store
	opts  grpcserver.Options
	guard netguard.Options
	m     *Metrics
	log   *slog.Logger

	lis  *netguard.Listener
	srv  *grpcserver.Server
	done chan error
}

func (f *grpcFrontend) Name() string { return ProtoGRPC }

func (f *grpcFrontend) Start(ctx context.Context) error {
	l, err := config.ParseListen(f.cfg.Listen, true)
	if err != nil {
		return fmt.Errorf("grpc.listen: %w", err)
	}
	lis, err := listen(l, f.guard)
	if err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	f.lis, f.done = lis, make(chan error, 1)
	f.m.addListener(ProtoGRPC, lis)
	f.srv = grpcserver.NewServer(f.store, f.opts)
	go func() { f.done <- f.srv.Serve(lis) }()
	return nil
}

func (f *grpcFrontend) Addr() string {
	if a := f.lis.Addr(); a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return f.lis.Addr().String()
}

func (f *grpcFrontend) Usage() string {
	a := f.lis.Addr()
	if a.Network() == "unix" {
		return "tvix/snix store API: grpc+unix://" + a.String()
	}
	return fmt.Sprintf("tvix/snix store API: grpc+http://%s:%s", tcpHost(a), tcpPort(a))
}

func (f *grpcFrontend) Shutdown(ctx context.Context) error {
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	f.srv.Shutdown(timeout)
	<-f.done // after a stop, Serve returns nil or ErrServerStopped
	return nil
}

// metricsFrontend serves /metrics, /healthz and /readyz over HTTP.
type metricsFrontend struct {
	cfg   config.Metrics
	m     *Metrics
	ready *atomic.Bool
	guard netguard.Options
	log   *slog.Logger

	gate *netguard.Listener
	srv  *http.Server
	done chan error
}

func (f *metricsFrontend) Name() string { return "metrics" }

func (f *metricsFrontend) Start(ctx context.Context) error {
	l, err := config.ParseListen(f.cfg.Listen, false)
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	lis, err := listen(l, f.guard)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	f.gate, f.done = lis, make(chan error, 1)
	f.m.addListener("metrics", lis)
	f.srv = &http.Server{
		Handler:           f.m.handler(f.ready),
		ReadHeaderTimeout: f.guard.HandshakeTimeout,
		IdleTimeout:       f.guard.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelWarn),
	}
	go func() { f.done <- f.srv.Serve(f.gate) }()
	return nil
}

func (f *metricsFrontend) Addr() string { return f.gate.Addr().String() }

func (f *metricsFrontend) Usage() string {
	a := f.gate.Addr()
	return fmt.Sprintf("http://%s/metrics, /healthz, /readyz", net.JoinHostPort(tcpHost(a), tcpPort(a)))
}

func (f *metricsFrontend) Shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	if err != nil {
		f.srv.Close()
	}
	f.gate.Close()
	if serr := <-f.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", serr)
	}
	return nil
}

// Package grpcserver serves any storeclient.Store over gRPC with the
// tvix/snix castore and store services (BlobService, DirectoryService,
// PathInfoService), so tvix/snix tools and storefs's own grpc+ store URLs
// can use it.
//
// Every service is registered under both package names: the generated
// descriptors carry the tvix names (/tvix.castore.v1.BlobService/Read …),
// and a copy of each grpc.ServiceDesc whose ServiceName says snix
// (/snix.castore.v1.BlobService/Read …) is registered beside it with the
// same handlers; the messages and field numbers are the same. The standard
// grpc health service (grpc.health.v1.Health) reports SERVING for "" and
// every service name while the server runs.
//
// The daemon runs it with
//
//	lis, err := grpcserver.Listen(addr, allow, logger)
//	...
//	err = grpcserver.Serve(ctx, lis, store, grpcserver.Options{Logger: logger})
//
// Serve returns when ctx is cancelled, after a graceful stop that lets
// running calls finish (at most Options.ShutdownTimeout, then the rest are
// cut). Listen binds loopback unless told otherwise; binding another
// address needs an allow-list of client networks, enforced on every
// connection.
//
// Stat with send_bao set answers with the blob's bao outboard
// (storeclient's format: storeclient/bao.go, docs/store-urls.md "Verified
// streaming"), the store's (storeclient.OutboardStore) or one computed
// from the blob and checked against its digest; a blob whose outboard
// would pass storeclient.MaxOutboardSize (64 MiB) is statted without one.
// A response with an outboard may be larger than grpc's default 4 MiB
// receive limit: a client asking for one raises its
// grpc.MaxCallRecvMsgSize to at least MaxOutboardSize plus a few KiB.
// Read counts the blob bytes it sends (Stats, WithStats).
//
// Uploads are validated as castore.md says. Directory Put takes the tree
// leaves first, every child sent earlier in the stream or already stored,
// every Directory reachable from the last (the root); status codes:
// INVALID_ARGUMENT for a malformed message, a wrong child size, a child
// sent after its parent, or a Directory not connected to the root;
// NOT_FOUND for a child that is neither sent nor stored (and for a
// PathInfo whose content is not stored); RESOURCE_EXHAUSTED for a stream
// over the size limit.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/internal/grpcbuf"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/storepb"
)

// Options tune a server. The zero value is usable.
type Options struct {
	// Logger receives one line per rejected upload, failed call and
	// lifecycle event. Default slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful stop of Serve. Default 10s.
	ShutdownTimeout time.Duration
	// MaxPutDirectoryBytes bounds the encoded Directories of one Put
	// stream, which are held until the stream is validated. Default 256 MiB.
	MaxPutDirectoryBytes int64
	// ReadChunkSize is the size of the BlobChunks that Read sends.
	// Default 256 KiB.
	ReadChunkSize int
	// ServerOptions are appended to the options of grpc.NewServer. A
	// WithStats option among them says where the server counts.
	ServerOptions []grpc.ServerOption

	// stats is where the server counts: a WithStats option's, or its own.
	stats *Stats
}

func (o Options) withDefaults() Options {
	if o.stats == nil {
		for _, opt := range o.ServerOptions {
			if so, ok := opt.(statsOption); ok {
				o.stats = so.st
			}
		}
		if o.stats == nil {
			o.stats = new(Stats)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.MaxPutDirectoryBytes <= 0 {
		o.MaxPutDirectoryBytes = 256 << 20
	}
	if o.ReadChunkSize <= 0 {
		o.ReadChunkSize = 256 << 10
	}
	return o
}

// Stats counts what a server sends. The zero value is ready to use; its
// methods are safe for concurrent use.
type Stats struct {
	blobBytesSent atomic.Int64
}

// BlobBytesSent returns the blob bytes that Read calls have sent: the data
// of their BlobChunks, without the framing (and without the outboards of
// Stat). A client that reads each blob once makes it grow by the sizes of
// the blobs it reads.
func (st *Stats) BlobBytesSent() int64 { return st.blobBytesSent.Load() }

// WithStats returns an option for Options.ServerOptions that makes the
// server count in st instead of in a Stats of its own. It is for code that
// hands a server its options without creating it, as the daemon's metrics
// do; grpc itself ignores the option.
func WithStats(st *Stats) grpc.ServerOption { return statsOption{st: st} }

type statsOption struct {
	grpc.EmptyServerOption
	st *Stats
}

// Server is a grpc.Server with the store services and health registered.
type Server struct {
	*grpc.Server
	health *health.Server
	names  []string
	stats  *Stats
}

// Stats returns what the server counts in (see WithStats).
func (s *Server) Stats() *Stats { return s.stats }

// NewServer returns a server for store, not yet serving. Run it with its
// Serve method (or use the Serve function, which also stops it).
func NewServer(store storeclient.Store, opts Options) *Server {
	opts = opts.withDefaults()
	log := opts.Logger
	base := []grpc.ServerOption{
		// Outermost, so that a panic anywhere below is one failed call.
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer recoverCall(ctx, log, info.FullMethod, &err)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer recoverCall(ss.Context(), log, info.FullMethod, &err)
			return h(srv, ss)
		}),
		// grpc-go's default is unbounded: one connection could open any
		// number of concurrent calls.
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		experimental.BufferPool(grpcbuf.New()),
	}
	gs := grpc.NewServer(append(base, opts.ServerOptions...)...)
	srv := &Server{Server: gs, health: health.NewServer(), stats: opts.stats}
	srv.names = Register(gs, store, opts)
	healthpb.RegisterHealthServer(gs, srv.health)
	srv.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, n := range srv.names {
		srv.health.SetServingStatus(n, healthpb.HealthCheckResponse_SERVING)
	}
	return srv
}

// Register registers the store services on r under both package names and
// returns the service names it registered.
func Register(r grpc.ServiceRegistrar, store storeclient.Store, opts Options) []string {
	opts = opts.withDefaults()
	impls := []struct {
		desc *grpc.ServiceDesc
		impl any
	}{
		{&castorepb.BlobService_ServiceDesc, &blobService{store: store, opts: opts}},
		{&castorepb.DirectoryService_ServiceDesc, &directoryService{store: store, opts: opts}},
		{&storepb.PathInfoService_ServiceDesc, &pathInfoService{store: store, opts: opts}},
	}
	var names []string
	for _, s := range impls {
		r.RegisterService(s.desc, s.impl)
		snix := SnixDesc(s.desc)
		r.RegisterService(snix, s.impl)
		names = append(names, s.desc.ServiceName, snix.ServiceName)
	}
	return names
}

// maxConcurrentStreams bounds the calls one client connection has open at
// once; more wait for a free stream.
const maxConcurrentStreams = 128

// recoverCall is deferred around every call: a panic in a handler (a bug,
// or a store that panics) fails that call with INTERNAL and one log line
// with the stack, and the server goes on.
func recoverCall(ctx context.Context, log *slog.Logger, method string, err *error) {
	if p := recover(); p != nil {
		log.Error("grpc: handler panicked; answering INTERNAL", "method", method, "client", peerAddr(ctx),
			"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}

// SnixDesc returns a copy of a generated tvix.* service descriptor named
// in the snix.* package instead. The handlers are shared: only the method
// paths differ.
func SnixDesc(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	c := *desc
	if rest, ok := strings.CutPrefix(c.ServiceName, "tvix."); ok {
		c.ServiceName = "snix." + rest
	}
	return &c
}

// Shutdown marks every service NOT_SERVING and stops the server
// gracefully, cutting calls still running after timeout.
func (s *Server) Shutdown(timeout time.Duration) {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.GracefulStop()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.Stop()
		<-stopped
	}
}

// Serve serves store on lis until ctx is cancelled, then stops gracefully
// (see Options.ShutdownTimeout) and returns nil. It closes lis. An error
// means the listener failed.
func Serve(ctx context.Context, lis net.Listener, store storeclient.Store, opts Options) error {
	opts = opts.withDefaults()
	srv := NewServer(store, opts)
	opts.Logger.Info("grpc: serving", "addr", lis.Addr().String())
	served := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			opts.Logger.Info("grpc: stopping", "addr", lis.Addr().String())
			srv.Shutdown(opts.ShutdownTimeout)
		case <-served:
		}
	}()
	err := srv.Serve(lis)
	close(served)
	<-stopped
	if ctx.Err() != nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	srv.Stop()
	return fmt.Errorf("grpc: serve on %s: %w", lis.Addr(), err)
}

// statusFor maps a store error to a gRPC status error: not found, corrupt
// (DATA_LOSS on reads, INVALID_ARGUMENT on uploads), cancelled, timed out;
// a gRPC status from a backend store keeps its code; anything else is
// INTERNAL.
func statusFor(err error, upload bool) error {
	switch {
	case errors.Is(err, storeclient.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, storeclient.ErrCorrupt):
		if upload {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return status.Error(st.Code(), err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func digestArg(b []byte, what string) (storeclient.Digest, error) {
	d, err := storeclient.DigestFromBytes(b)
	if err != nil {
		return d, status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	return d, nil
}

// peerLog returns a logger with the client address of a call.
func peerLog(ctx context.Context, l *slog.Logger) *slog.Logger {
	if a := peerAddr(ctx); a != "" {
		return l.With("client", a)
	}
	return l
}

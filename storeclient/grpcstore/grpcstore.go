// Package grpcstore is a storeclient.Store that talks to a tvix/snix store
// daemon (or `storefs serve --grpc`) over gRPC: the store URLs
//
//	grpc+http://HOST:PORT     plain-text HTTP/2
//	grpc+https://HOST[:PORT]  TLS, verified against the system roots (port 443 by default)
//	grpc+unix:///PATH         a unix socket
//
// Query parameters: `package=snix|tvix` fixes the protobuf package of the
// method paths (default: try snix.*.v1 and fall back to tvix.*.v1 when the
// server answers UNIMPLEMENTED, then remember the answer); `timeout=DURATION`
// sets Options.Timeout (default 30s).
//
// The connection is made lazily, on the first call. Every call, and every
// BlobReader.ReadAt, has one deadline, the timeout from its start, that
// covers its retries too: idempotent calls (all reads, and Directory and
// PathInfo puts) are retried with backoff when the server is unavailable,
// but only while there is time left. A server that stalls, before its
// answer or in the middle of a stream, fails the call at its deadline; a
// backend outage shows up as an error, and the next calls work again once
// the backend is back. Streams read at the caller's pace (a BlobWriter, a
// ListPathInfos) give each Write, Commit or next item its own timeout; a
// blob measured by streaming it (below) must send each MiB within one.
//
// Data from a server is not trusted: every Directory is re-hashed and
// checked against the digest asked for, PathInfos are validated, and a blob
// streamed from its start to its end is checked against its digest. The
// Store does not implement TrustedLocal, so vfs verifies blobs too. For
// that, it implements storeclient.OutboardStore (BlobOutboard asks Stat
// with send_bao; tvix/snix servers send none) and
// storeclient.SizedBlobOpener (OpenBlobSized opens a blob of a size vfs
// knows with no call, and fails reads with storeclient.ErrCorrupt when the
// server's blob is longer or shorter).
//
// Blobs are read without holding them whole: a BlobReader keeps one Read
// stream open and serves ReadAt calls at or after its position from it; a
// read before that position re-opens the stream at the wanted offset when
// the server supports the storefs offset extension
// (castorepb.ReadOffsetMetadata), or from the start of the blob (or of the
// chunk the server listed in Stat) otherwise. What Stat said about a blob
// (its chunks, its size, that it has no outboard) is remembered in a
// bounded cache, so that opening a blob again needs no call. A blob is
// measured by streaming it only by StatBlob or OpenBlob, and only when the
// server lists no chunks and its size is not known yet.
//
// Memory per open BlobReader, with the default Options: at most
// CachedWindows × Window (4 × 64 KiB = 256 KiB) of cached bytes, allocated
// once per reader (a ReadAt that covers whole windows is filled directly
// and caches nothing); and, while its stream is open, the bytes the
// transport receives ahead of the reader, at most StreamWindow (1 MiB),
// plus the one message being consumed, of the server's chunk size (256
// KiB from storefs) and never more than 4 MiB, plus an 11 KiB hasher; plus
// a chunk list of at most 4096 chunks (192 KiB) when the server lists
// chunks in Stat. That is about 1.5 MiB against a storefs server, and at
// most 5.5 MiB against any.
package grpcstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/internal/grpcbuf"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/storepb"
)

// Package selects the protobuf package of the gRPC method paths.
type Package string

// The package choices. PackageAuto tries snix first and falls back to tvix.
const (
	PackageAuto Package = ""
	PackageSnix Package = "snix"
	PackageTvix Package = "tvix"
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// Package fixes the package of the method paths; PackageAuto detects it.
	Package Package
	// Timeout bounds every call and every BlobReader.ReadAt, retries
	// included (see the package documentation). Default 30s.
	Timeout time.Duration
	// Attempts is how often an idempotent call is tried when the server is
	// unavailable. Default 4.
	Attempts int
	// Window is the unit in which a BlobReader caches blob bytes.
	// Default 64 KiB, the bao chunk group.
	Window int
	// CachedWindows is how many windows each BlobReader keeps. Default 4.
	CachedWindows int
	// StreamWindow is the HTTP/2 flow-control window of each stream: how
	// many bytes of a Read stream the transport receives ahead of the
	// reader. It bounds a stream's memory, and its throughput to
	// StreamWindow per round trip. Default 1 MiB; a negative value keeps
	// grpc's dynamic windows (up to 16 MiB per stream).
	StreamWindow int
	// Logger receives one Debug line per retry or package detection.
	// Default slog.Default().
	Logger *slog.Logger
	// DialOptions are appended to the options of grpc.NewClient (tests use
	// them for custom dialers).
	DialOptions []grpc.DialOption
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Window <= 0 {
		o.Window = storeclient.BaoGroupSize
	}
	if o.CachedWindows <= 0 {
		o.CachedWindows = 4
	}
	if o.StreamWindow == 0 {
		o.StreamWindow = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Store is a gRPC castore client, safe for concurrent use.
type Store struct {
	target string // for messages
	opts   Options
	conn   *grpc.ClientConn
	blobs  castorepb.BlobServiceClient
	dirs   castorepb.DirectoryServiceClient
	paths  storepb.PathInfoServiceClient

	// detected is the package the server answered to in auto mode:
	// "" until known.
	detected atomic.Value // Package

	// offsetReads is 0 while unknown, 1 if the server honours
	// castorepb.ReadOffsetMetadata, -1 if not.
	offsetReads atomic.Int32

	// known is what the server said about blobs.
	known blobCache

	// ctx is cancelled by Close; blob readers outlive the context of the
	// OpenBlob call that made them and hang their streams off it.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ storeclient.Store = (*Store)(nil)

// Open parses a grpc+http, grpc+https or grpc+unix store URL and returns a
// Store for it. Nothing is dialled until the first call. URL query
// parameters override opts.
func Open(rawURL string, opts Options) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", rawURL, err)
	}
	var target string
	var creds credentials.TransportCredentials
	switch u.Scheme {
	case "grpc+http":
		if u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("store URL %q: want grpc+http://HOST:PORT", rawURL)
		}
		target, creds = "dns:///"+u.Host, insecure.NewCredentials()
	case "grpc+https":
		if u.Host == "" {
			return nil, fmt.Errorf("store URL %q: want grpc+https://HOST[:PORT]", rawURL)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		target, creds = "dns:///"+host, credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	case "grpc+unix":
		path := u.Path
		if u.Host != "" || path == "" {
			return nil, fmt.Errorf("store URL %q: want grpc+unix:///ABSOLUTE/PATH", rawURL)
		}
		target, creds = "unix://"+path, insecure.NewCredentials()
	default:
		return nil, fmt.Errorf("store URL %q: not a grpc+http, grpc+https or grpc+unix URL", rawURL)
	}
	if u.Path != "" && u.Scheme != "grpc+unix" && u.Path != "/" {
		return nil, fmt.Errorf("store URL %q: a path is not allowed here", rawURL)
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "package":
			switch p := Package(q.Get(k)); p {
			case PackageSnix, PackageTvix, PackageAuto:
				opts.Package = p
			default:
				return nil, fmt.Errorf("store URL %q: package=%s: want snix or tvix", rawURL, p)
			}
		case "timeout":
			d, err := time.ParseDuration(q.Get(k))
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("store URL %q: timeout=%s: want a positive duration such as 10s", rawURL, q.Get(k))
			}
			opts.Timeout = d
		case "window":
			n, err := strconv.ParseInt(q.Get(k), 10, 64)
			if err != nil || n < 64<<10 || n > 64<<20 {
				return nil, fmt.Errorf("store URL %q: window=%s: want a byte count from 65536 to 67108864", rawURL, q.Get(k))
			}
			opts.StreamWindow = int(n)
		default:
			return nil, fmt.Errorf("store URL %q: unknown parameter %q (want package, timeout, window)", rawURL, k)
		}
	}
	return New(target, creds, opts)
}

// New returns a Store for a gRPC target (as grpc.NewClient takes it) with
// the given transport credentials. Nothing is dialled until the first call.
func New(target string, creds credentials.TransportCredentials, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Reconnect quickly once a backend comes back, instead of
		// grpc's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: min(opts.Timeout, 20*time.Second),
		}),
		grpc.WithChainUnaryInterceptor(renameUnary),
		grpc.WithChainStreamInterceptor(renameStream),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		experimental.WithBufferPool(grpcbuf.New()),
	}
	if opts.StreamWindow > 0 {
		// Static windows: grpc's dynamic ones grow to 16 MiB per
		// stream, which every open reader would hold. The connection's
		// window is credited as bytes arrive, not as they are read, so
		// it bounds no memory; it only must not throttle many streams.
		w := int32(min(opts.StreamWindow, math.MaxInt32))
		dial = append(dial,
			grpc.WithInitialWindowSize(w),
			grpc.WithInitialConnWindowSize(max(16<<20, w)))
	}
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("grpc store %s: %w", target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		target: target,
		opts:   opts,
		conn:   conn,
		blobs:  castorepb.NewBlobServiceClient(conn),
		dirs:   castorepb.NewDirectoryServiceClient(conn),
		paths:  storepb.NewPathInfoServiceClient(conn),
		ctx:    ctx,
		cancel: cancel,
	}
	return s, nil
}

// Close closes the connection and every stream of every open BlobReader.
func (s *Store) Close() error {
	s.cancel()
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("grpc store %s: close: %w", s.target, err)
	}
	return nil
}

// Package returns the package the method paths use: the configured one, or
// in auto mode the detected one (PackageAuto while not yet known).
func (s *Store) Package() Package {
	if s.opts.Package != PackageAuto {
		return s.opts.Package
	}
	p, _ := s.detected.Load().(Package)
	return p
}

// packageOption is a CallOption read by the rename interceptors.
type packageOption struct {
	grpc.EmptyCallOption
	pkg Package
}

// rename maps a generated method path (/tvix.castore.v1.BlobService/Read)
// to the package the call was made for.
func rename(method string, opts []grpc.CallOption) string {
	for _, o := range opts {
		if po, ok := o.(packageOption); ok && po.pkg == PackageSnix {
			if rest, ok := strings.CutPrefix(method, "/tvix."); ok {
				return "/snix." + rest
			}
		}
	}
	return method
}

func renameUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(ctx, rename(method, opts), req, reply, cc, opts...)
}

func renameStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(ctx, desc, cc, rename(method, opts), opts...)
}

// callFunc makes one attempt of a call, with the package option to pass to
// the generated client.
type callFunc func(ctx context.Context, pkg grpc.CallOption) error

// call runs fn under one deadline, Timeout from now, that covers every
// attempt (see retry), and wraps the error with the store and op.
func (s *Store) call(ctx context.Context, op string, idempotent bool, fn callFunc) error {
	ctx, cancel := s.within(ctx)
	defer cancel()
	if err := s.retry(ctx, op, idempotent, fn); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// retry runs fn, handling package detection and, when idempotent, retries
// with backoff while the server is unavailable and ctx's deadline leaves
// time for another attempt. fn must surface an UNIMPLEMENTED answer itself,
// e.g. by receiving the first message of a stream. The error is fn's last,
// not wrapped.
func (s *Store) retry(ctx context.Context, op string, idempotent bool, fn callFunc) error {
	for attempt := 1; ; attempt++ {
		err := explain(ctx, s.attempt(ctx, fn))
		if err == nil || !idempotent || attempt >= s.opts.Attempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		delay := time.Duration(float64(50*time.Millisecond) * float64(uint(1)<<(attempt-1)) * (0.8 + 0.4*rand.Float64()))
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < delay {
			// No time for another attempt: the last error says more
			// than a deadline would.
			return err
		}
		s.opts.Logger.Debug("grpc store: retrying", "op", op, "target", s.target, "attempt", attempt, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// attempt makes one try of fn under the package choice, falling back from
// snix to tvix in auto mode.
func (s *Store) attempt(ctx context.Context, fn callFunc) error {
	run := func(pkg Package) error { return fn(ctx, packageOption{pkg: pkg}) }
	if s.opts.Package != PackageAuto {
		return run(s.opts.Package)
	}
	if p := s.Package(); p != PackageAuto {
		return run(p)
	}
	err := run(PackageSnix)
	if status.Code(err) != codes.Unimplemented {
		if err == nil || isServerAnswer(err) {
			s.setDetected(PackageSnix)
		}
		return err
	}
	err = run(PackageTvix)
	if err == nil || (isServerAnswer(err) && status.Code(err) != codes.Unimplemented) {
		s.setDetected(PackageTvix)
	}
	return err
}

func (s *Store) setDetected(p Package) {
	if s.detected.CompareAndSwap(nil, p) {
		// Debug: a command's stderr stays empty on success (storefs cat).
		s.opts.Logger.Debug("grpc store: detected protobuf package", "target", s.target, "package", p)
	}
}

// isServerAnswer reports whether err came from a server that understood
// the method: any status but the transport-level ones.
func isServerAnswer(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Unimplemented:
		return false
	}
	_, ok := status.FromError(err)
	return ok
}

// ensurePackage makes sure the package is known before a call that cannot
// be repeated (a blob upload), by asking for the empty blob.
func (s *Store) ensurePackage(ctx context.Context) error {
	if s.Package() != PackageAuto {
		return nil
	}
	_, err := s.StatBlob(ctx, storeclient.EmptyDigest)
	if err != nil && !errors.Is(err, storeclient.ErrNotFound) {
		return err
	}
	return nil
}

func retryable(err error) bool {
	switch status.Code(err) {
	case codes.ResourceExhausted:
		// A busy server, but not a message over our limit: the server
		// would send it again.
		return !strings.Contains(status.Convert(err).Message(), "larger than max")
	case codes.Unavailable, codes.Aborted:
		return true
	case codes.DeadlineExceeded:
		// The server's deadline, or a stream cut at an earlier call's;
		// a call cut at its own deadline has no time left to retry.
		return true
	}
	return false
}

// wrap turns a gRPC error into a storefs one: NOT_FOUND wraps
// storeclient.ErrNotFound, DATA_LOSS storeclient.ErrCorrupt; the status
// stays reachable with status.FromError.
func (s *Store) wrap(op string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("grpc store %s: %s: %w (%w)", s.target, op, storeclient.ErrNotFound, err)
	case codes.DataLoss, codes.OutOfRange:
		// OUT_OF_RANGE answers a read at an offset past the server's
		// blob, which the blob's size (a Directory's, or Stat's) says
		// is inside it.
		return fmt.Errorf("grpc store %s: %s: %w (%w)", s.target, op, storeclient.ErrCorrupt, err)
	}
	return fmt.Errorf("grpc store %s: %s: %w", s.target, op, err)
}

// Package server is the storefs daemon (`storefs serve`): it opens one
// store read-only, builds one vfs.FS over it and serves that FS through
// every configured frontend — FUSE mounts, NFSv3, 9P2000.L, virtio-fs for
// virtual machines — plus the
// store itself over the tvix/snix gRPC API and Prometheus metrics.
//
// Start brings everything up and returns once every frontend serves; a
// frontend that fails to start stops the whole start, with everything
// already started shut down again (nothing left mounted or bound).
// Server.Reload applies what can change while running (log level, client
// allow-lists, cache sizes) and names what needs a restart.
// Server.Shutdown stops taking clients, lets requests in flight finish
// (bounded by its context), unmounts and closes.
//
// Each frontend gets its own vfs.FS view labelled with its protocol, and
// the server's Metrics observe every view: protocol packages carry no
// metrics code.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/internal/netguard"
	"github.com/storefs/storefs/protocols/nfs"
	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// Options are what the daemon gets besides its configuration.
type Options struct {
	// Logger receives the daemon's logs. Default slog.Default().
	Logger *slog.Logger
	// LogLevel, if set, is the level Logger's handler uses; Reload sets it
	// from log.level.
	LogLevel *slog.LevelVar
	// OpenStore opens the store; default storeurl.Open, read-only. Tests
	// pass a memory store here.
	OpenStore func(ctx context.Context, url string) (storeclient.Store, error)
}

// Server is a running daemon.
type Server struct {
	log     *slog.Logger
	level   *slog.LevelVar
	store   storeclient.Store
	fs      *vfs.FS
	metrics *Metrics
	ready   atomic.Bool
	allow   map[string]*netguard.AllowList // by config section: nfs, ninep, grpc, metrics
	running []Frontend                     // in start order
	// stopScrub stops the scrubber and waits for it; nil if none runs.
	stopScrub func()
	shutOnce  sync.Once
	shutErr   error

	mu  sync.Mutex
	cfg *config.Config // the configuration in effect (Reload updates the reloadable keys)
}

// Start opens the store, builds the FS and starts every frontend of cfg,
// in the order metrics, FUSE mounts, NFS, 9P, virtio-fs, gRPC. It returns when all
// serve. On error everything started is shut down and the store closed.
func Start(ctx context.Context, cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OpenStore == nil {
		opts.OpenStore = func(ctx context.Context, url string) (storeclient.Store, error) {
			return storeurl.Open(ctx, url, storeurl.Options{ReadOnly: true, VerifyOnOpen: cfg.Store.VerifyOnOpen})
		}
	}
	s := &Server{
		log:     opts.Logger,
		level:   opts.LogLevel,
		metrics: NewMetrics(),
		allow:   make(map[string]*netguard.AllowList),
		cfg:     cfg,
	}
	for section, nets := range map[string][]string{
		"nfs": cfg.NFS.AllowedNetworks, "ninep": cfg.NineP.AllowedNetworks,
		"grpc": cfg.GRPC.AllowedNetworks, "metrics": cfg.Metrics.AllowedNetworks,
	} {
		p, err := config.ParseNetworks(nets)
		if err != nil {
			return nil, fmt.Errorf("%s.allowed_networks: %w", section, err)
		}
		s.allow[section] = netguard.NewAllowList(p)
	}

	store, err := opts.OpenStore(ctx, cfg.Store.URL)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.store = store
	s.fs, err = vfs.New(store, vfs.Options{
		ListRoot:           cfg.ListRoot,
		NoXAttrs:           !cfg.XAttrs,
		UID:                cfg.Owner.UID,
		GID:                cfg.Owner.GID,
		DirectoryCacheSize: cfg.Cache.Directories,
		RemoteCacheBytes:   cfg.Cache.RemoteMemory,
		SpoolDir:           cfg.Store.SpoolDir,
		SpoolSize:          cfg.Store.SpoolSize,
		StoreName:          storeName(cfg.Store.URL),
		Timeout:            cfg.Timeouts.Backend.Std(),
		Logger:             s.log,
		Observer:           s.metrics,
	})
	if err != nil {
		store.Close()
		return nil, err
	}

	if sc, ok := store.(scrubber); ok && cfg.Scrub.Enabled {
		s.startScrub(sc, cfg.Scrub)
	}

	for _, f := range s.frontends(cfg) {
		if err := ctx.Err(); err != nil {
			s.abort()
			return nil, fmt.Errorf("start: %w", err)
		}
		if err := f.Start(ctx); err != nil {
			s.abort()
			return nil, fmt.Errorf("start %s: %w", f.Name(), err)
		}
		s.running = append(s.running, f)
		s.metrics.setFrontend(f.Name(), f.Addr(), true)
		s.log.Info("serving", "frontend", f.Name(), "addr", f.Addr())
	}
	s.ready.Store(true)
	return s, nil
}

// abort shuts down what a failed Start started, at once.
func (s *Server) abort() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no drain: nothing has been announced
	if err := s.Shutdown(ctx); err != nil {
		s.log.Warn("cleaning up after a failed start", "err", err)
	}
}

// frontends builds the frontends cfg configures, not yet started.
func (s *Server) frontends(cfg *config.Config) []Frontend {
	var fs []Frontend
	if cfg.Metrics.Listen != "" {
		log := s.log.With("frontend", "metrics")
		guard := s.guard(cfg, "metrics", cfg.Metrics.MaxConnections, cfg.Timeouts.MetricsIdle.Std(), log)
		guard.ActiveOnRead = true // net/http reads requests itself
		fs = append(fs, &metricsFrontend{cfg: cfg.Metrics, m: s.metrics, ready: &s.ready, log: log, guard: guard})
	}
	for _, mnt := range cfg.FUSE {
		fs = append(fs, newFUSEFrontend(mnt, s.fs.View(ProtoFUSE), s.metrics, s.log.With("frontend", ProtoFUSE)))
	}
	if cfg.NFS.Listen != "" {
		log := s.log.With("frontend", ProtoNFS)
		fs = append(fs, &nfsFrontend{cfg: cfg.NFS, fs: s.fs.View(ProtoNFS), m: s.metrics, log: log,
			guard: s.guard(cfg, ProtoNFS, cfg.NFS.MaxConnections, cfg.Timeouts.NFSIdle.Std(), log),
			opts: nfs.Options{
				Clients:           s.allow[ProtoNFS],
				RequireSecurePort: cfg.NFS.RequireSecurePort,
				MaxRead:           cfg.NFS.MaxRead,
				IdleTimeout:       cfg.Timeouts.NFSIdle.Std(),
				HandleCacheSize:   cfg.Cache.NFSHandles,
				Logger:            log,
			}})
	}
	if cfg.NineP.Listen != "" {
		log := s.log.With("frontend", ProtoNineP)
		fs = append(fs, &ninepFrontend{cfg: cfg.NineP, fs: s.fs.View(ProtoNineP), m: s.metrics, log: log,
			guard: s.guard(cfg, ProtoNineP, cfg.NineP.MaxConnections, cfg.Timeouts.NinePIdle.Std(), log),
			opts: ninep.Options{
				MaxMsize:      cfg.NineP.Msize,
				MaxFids:       cfg.NineP.MaxFids,
				MaxServerFids: cfg.NineP.MaxServerFids,
				Logger:        log,
			}})
	}
	if cfg.VirtioFS.Socket != "" {
		fs = append(fs, &virtiofsFrontend{cfg: cfg.VirtioFS, fs: s.fs.View(ProtoVirtioFS), m: s.metrics,
			log: s.log.With("frontend", ProtoVirtioFS)})
	}
	if cfg.GRPC.Listen != "" {
		log := s.log.With("frontend", ProtoGRPC)
		guard := s.guard(cfg, ProtoGRPC, cfg.GRPC.MaxConnections, cfg.Timeouts.GRPCIdle.Std(), log)
		guard.ActiveOnRead = true // grpc-go reads HTTP/2 frames itself
		fs = append(fs, &grpcFrontend{cfg: cfg.GRPC, store: s.store, m: s.metrics, log: log, guard: guard,
			opts: grpcserver.Options{
				Logger:          log,
				ShutdownTimeout: cfg.Timeouts.Shutdown.Std(),
				ServerOptions:   s.metrics.grpcOptions(),
			}})
	}
	return fs
}

// guard returns how the listener of a network frontend admits and bounds
// its connections: the section's reloadable allow-list, its connection cap,
// the handshake timeout and its idle timeout.
func (s *Server) guard(cfg *config.Config, section string, maxConns int, idle time.Duration, log *slog.Logger) netguard.Options {
	return netguard.Options{
		Protocol:         section,
		Allow:            s.allow[section],
		MaxConns:         maxConns,
		HandshakeTimeout: cfg.Timeouts.Handshake.Std(),
		IdleTimeout:      idle,
		Logger:           log,
	}
}

// Frontends returns the frontends that serve, in start order.
func (s *Server) Frontends() []Frontend { return slices.Clone(s.running) }

// Metrics returns the daemon's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// FS returns the filesystem every frontend serves (unlabelled view).
func (s *Server) FS() *vfs.FS { return s.fs }

// ReloadReport says what a Reload did.
type ReloadReport struct {
	// Applied are the keys whose new values are now in effect.
	Applied []string
	// NeedRestart are the keys that changed but take effect only after a
	// restart; the old values stay in effect.
	NeedRestart []string
}

// reloadable are the keys Reload applies.
var reloadable = []string{
	"log.level",
	"nfs.allowed_networks", "ninep.allowed_networks", "grpc.allowed_networks", "metrics.allowed_networks",
	"cache.directories", "cache.remote_memory", "store.spool_size",
}

// Reload applies the reloadable keys of cfg (log.level if Options.LogLevel
// was given, the allow-lists, the Directory cache, remote-blob memory and
// spool sizes) and reports the other changed keys as needing a restart. cfg must be a checked configuration (config.Load).
func (s *Server) Reload(cfg *config.Config) (ReloadReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rep ReloadReport
	for _, key := range config.Changed(s.cfg, cfg) {
		if !slices.Contains(reloadable, key) || (key == "log.level" && s.level == nil) {
			rep.NeedRestart = append(rep.NeedRestart, key)
			continue
		}
		rep.Applied = append(rep.Applied, key)
	}
	next := *s.cfg
	for _, key := range rep.Applied {
		switch key {
		case "log.level":
			var l slog.Level
			if err := l.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
				return ReloadReport{}, fmt.Errorf("log.level: %w", err)
			}
			s.level.Set(l)
			next.Log.Level = cfg.Log.Level
		case "nfs.allowed_networks", "ninep.allowed_networks", "grpc.allowed_networks", "metrics.allowed_networks":
			section := key[:len(key)-len(".allowed_networks")]
			var nets []string
			switch section {
			case "nfs":
				nets, next.NFS.AllowedNetworks = cfg.NFS.AllowedNetworks, cfg.NFS.AllowedNetworks
			case "ninep":
				nets, next.NineP.AllowedNetworks = cfg.NineP.AllowedNetworks, cfg.NineP.AllowedNetworks
			case "grpc":
				nets, next.GRPC.AllowedNetworks = cfg.GRPC.AllowedNetworks, cfg.GRPC.AllowedNetworks
			case "metrics":
				nets, next.Metrics.AllowedNetworks = cfg.Metrics.AllowedNetworks, cfg.Metrics.AllowedNetworks
			}
			p, err := config.ParseNetworks(nets)
			if err != nil {
				return ReloadReport{}, fmt.Errorf("%s: %w", key, err)
			}
			s.allow[section].Set(p)
		case "cache.directories":
			s.fs.SetCacheSizes(cfg.Cache.Directories, 0, 0)
			next.Cache.Directories = cfg.Cache.Directories
		case "cache.remote_memory":
			s.fs.SetCacheSizes(0, cfg.Cache.RemoteMemory, 0)
			next.Cache.RemoteMemory = cfg.Cache.RemoteMemory
		case "store.spool_size":
			s.fs.SetCacheSizes(0, 0, cfg.Store.SpoolSize)
			next.Store.SpoolSize = cfg.Store.SpoolSize
		}
	}
	s.cfg = &next
	return rep, nil
}

// Config returns the configuration in effect.
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Shutdown stops every frontend in reverse start order — each stops taking
// clients and lets requests in flight finish until ctx is done — then
// closes the store. It returns the first error; later calls return the
// same.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.ready.Store(false)
		var errs []error
		for i := len(s.running) - 1; i >= 0; i-- {
			f := s.running[i]
			if err := f.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
			s.metrics.setFrontend(f.Name(), f.Addr(), false)
			s.log.Info("stopped", "frontend", f.Name(), "addr", f.Addr())
		}
		if s.stopScrub != nil {
			s.stopScrub()
		}
		if s.store != nil {
			if err := s.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		s.shutErr = errors.Join(errs...)
	})
	return s.shutErr
}

// scrubber is a store that re-hashes its own blobs in the background and
// quarantines the ones that no longer match (the embedded local store).
type scrubber interface {
	Scrub(ctx context.Context, opts local.ScrubOptions) error
	ScrubStats() local.ScrubStats
	QuarantineCount() int
}

// startScrub runs the store's scrubber until Shutdown, and reports it in
// the metrics.
func (s *Server) startScrub(sc scrubber, cfg config.Scrub) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := sc.Scrub(ctx, local.ScrubOptions{
			BytesPerSecond: cfg.BytesPerSecond,
			Interval:       noneIfZero(cfg.Interval.Std()),
			StartDelay:     noneIfZero(cfg.StartDelay.Std()),
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("scrub stopped", "err", err)
		}
	}()
	s.metrics.setScrubber(sc)
	s.log.Info("scrubbing the store in the background", "bytes_per_second", cfg.BytesPerSecond, "interval", cfg.Interval.Std(), "start_delay", cfg.StartDelay.Std())
	s.stopScrub = func() {
		cancel()
		<-done
	}
}

// noneIfZero maps a configured 0 ("no pause") to local.ScrubOptions'
// negative value, whose 0 means the default.
func noneIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// storeName is the store URL as log lines show it: passwords in it
// replaced by url.URL.Redacted's "xxxxx"; "" is the embedded store.
func storeName(raw string) string {
	if raw == "" {
		return "embedded store"
	}
	parts := strings.Split(raw, "|")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, "|")
}

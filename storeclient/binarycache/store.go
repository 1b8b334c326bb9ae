package binarycache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// Options are what New needs besides the Config.
type Options struct {
	// Cache receives fetched paths and serves blobs, Directories and
	// PathInfos. Required.
	Cache storeclient.Store
	// OwnCache makes Close close Cache too.
	OwnCache bool
	// Logger receives one line per refused path, failed fetch and retry.
	// Default slog.Default().
	Logger *slog.Logger
	// HTTPClient is used for http(s) caches; nil means a client tuned
	// for the Config's timeout.
	HTTPClient *http.Client
	// OnBytes, if set, is called with the number of NAR bytes (as stored
	// in the cache, compressed) as they are downloaded, for progress.
	OnBytes func(n int64)
	// CommitInBackground lets a lookup return as soon as the path is
	// fetched and verified and its blobs are in the cache store, and
	// stores its Directories and PathInfo (after the cache store has
	// synced the blobs) in the background; until then the Store serves
	// them from memory. A lookup then does not wait for the disk (a
	// syncfs waits for every dirty file of the filesystem, not only the
	// path's). The crash safety is the same: the PathInfo is written
	// last. A commit that fails is logged once and retried with backoff,
	// the path still served from memory (it was answered already); Close
	// waits for the commits, and gives up a failing one after a last
	// attempt. Without it (storefs copy), a lookup returns when the path
	// is durable in the cache store.
	CommitInBackground bool
}

// Store is a lazy, read-only storeclient.Store over a Nix binary cache.
// Its methods may be called concurrently.
type Store struct {
	cfg      *Config
	cache    storeclient.Store
	ownCache bool
	t        transport
	log      *slog.Logger
	onBytes  func(int64)
	now      func() time.Time
	bgCommit bool

	// ctx is the lifetime of the fetches the Store runs; Close cancels it
	// and waits for them (wg).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// commitRetry is the delay before the first retry of a background
	// commit that failed; it doubles up to commitRetryMax.
	commitRetry, commitRetryMax time.Duration
	// maxStagedEntries bounds the Directory entries a fetch keeps in
	// memory for its commit (see staging).
	maxStagedEntries int

	mu      sync.Mutex
	closed  bool
	flights map[storeclient.StorePathDigest]*flight
	missing map[storeclient.StorePathDigest]time.Time // digest → when to ask again

	// staged holds the Directories of fetched paths whose commit runs in
	// the background (CommitInBackground), by digest, with the number of
	// such paths that have each; nstaged is its length, so that
	// GetDirectory takes no lock when it is empty.
	stagedMu sync.RWMutex
	staged   map[storeclient.Digest]*stagedDir
	nstaged  atomic.Int64
}

// stagedDir is a Directory served from memory until its commit is done.
type stagedDir struct {
	dir  *storeclient.Directory
	refs int
}

var _ storeclient.Store = (*Store)(nil)

// flight is one fetch of a store path, shared by every lookup that
// arrives while it runs.
type flight struct {
	done   chan struct{}
	info   *storeclient.PathInfo
	err    error
	joined int // lookups waiting for it, under Store.mu (for tests)
	// committing is set, under Store.mu, when done is closed with info
	// while the commit still runs: the flight stays in Store.flights
	// until then, so lookups find the path.
	committing bool
}

// defaultMaxStagedEntries is the most Directory entries a fetch keeps in
// memory (some 100-200 bytes each: 15-30 MiB, next to the importer's 64
// MiB budget); a path with more stores its Directories as they come and is
// committed before its lookup is answered.
const defaultMaxStagedEntries = 1 << 17

// maxMissing bounds the negative cache; when full, expired entries are
// dropped, and if none are, all of them.
const maxMissing = 1 << 16

// ErrReadOnly is returned by the write methods: a binary cache store is
// filled only by lookups.
var ErrReadOnly = errors.New("a Nix binary cache store is read-only (paths are fetched on lookup; use storefs copy to fill another store)")

// OpenURL parses rawURL (see Config), opens its cache store with
// openCache, and returns the Store, which owns the cache store.
func OpenURL(ctx context.Context, rawURL string, openCache func(ctx context.Context, url string) (storeclient.Store, error)) (*Store, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(cfg.CacheURL, "nix+") {
		return nil, fmt.Errorf("binary cache %s: cache=%s: the cache store cannot itself be a binary cache", cfg, cfg.CacheURL)
	}
	cache, err := openCache(ctx, cfg.CacheURL)
	if err != nil {
		return nil, fmt.Errorf("binary cache %s: open cache store %s: %w", cfg, cfg.CacheURL, err)
	}
	s, err := New(ctx, cfg, Options{Cache: cache, OwnCache: true, CommitInBackground: true})
	if err != nil {
		cache.Close()
		return nil, err
	}
	return s, nil
}

// New returns a Store over the binary cache cfg names. It reads the
// cache's nix-cache-info (a missing one is accepted, as Nix does; a
// StoreDir other than /nix/store is an error).
func New(ctx context.Context, cfg *Config, opts Options) (*Store, error) {
	if opts.Cache == nil {
		return nil, errors.New("binarycache: Options.Cache is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{
		cfg:              cfg,
		cache:            opts.Cache,
		ownCache:         opts.OwnCache,
		log:              log,
		onBytes:          opts.OnBytes,
		now:              time.Now,
		bgCommit:         opts.CommitInBackground,
		commitRetry:      time.Second,
		commitRetryMax:   time.Minute,
		maxStagedEntries: defaultMaxStagedEntries,
		staged:           make(map[storeclient.Digest]*stagedDir),
		flights:          make(map[storeclient.StorePathDigest]*flight),
		missing:          make(map[storeclient.StorePathDigest]time.Time),
	}
	switch cfg.BaseURL.Scheme {
	case "file":
		fi, err := os.Stat(cfg.BaseURL.Path)
		if err != nil {
			return nil, fmt.Errorf("binary cache %s: %w", cfg, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("binary cache %s: not a directory", cfg)
		}
		s.t = &fileTransport{dir: cfg.BaseURL.Path}
	default:
		client := opts.HTTPClient
		if client == nil {
			client = newHTTPClient(cfg.Timeout)
		}
		ht := &httpTransport{base: cfg.BaseURL, client: client, retries: cfg.Retries, timeout: cfg.Timeout, log: log, backoff: defaultBackoff}
		if u := cfg.BaseURL.User; u != nil {
			pw, _ := u.Password()
			ht.creds = &credentials{login: u.Username(), password: pw}
		} else {
			c, err := netrcCredentials(netrcPath(), cfg.BaseURL.Hostname())
			if err != nil {
				return nil, fmt.Errorf("binary cache %s: %w", cfg, err)
			}
			ht.creds = c
		}
		s.t = ht
	}
	if err := s.readCacheInfo(ctx); err != nil {
		s.t.close()
		return nil, err
	}
	if len(cfg.TrustedKeys) == 0 {
		log.Warn("binary cache: no trusted-public-keys given; signatures are not checked", "cache", cfg.String())
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return s, nil
}

// readCacheInfo checks the cache's nix-cache-info.
func (s *Store) readCacheInfo(ctx context.Context) error {
	r, err := s.t.get(ctx, "nix-cache-info")
	if errors.Is(err, storeclient.ErrNotFound) {
		s.log.Debug("binary cache: no nix-cache-info; assuming StoreDir /nix/store", "cache", s.cfg.String())
		return nil
	}
	if err != nil {
		return fmt.Errorf("binary cache %s: read nix-cache-info: %w", s.cfg, err)
	}
	defer r.Close()
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "StoreDir" {
			if dir := strings.TrimSpace(v); dir != storeclient.StoreDir {
				return fmt.Errorf("binary cache %s: its StoreDir is %q, but storefs serves only %s", s.cfg, dir, storeclient.StoreDir)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("binary cache %s: read nix-cache-info: %w", s.cfg, err)
	}
	return nil
}

// TrustedLocal implements storeclient.TrustedStore: content is verified
// when it is fetched, so the Store is as trustworthy as the store it keeps
// that content in.
func (s *Store) TrustedLocal() bool { return storeclient.IsTrustedLocal(s.cache) }

// Cache returns the cache store.
func (s *Store) Cache() storeclient.Store { return s.cache }

// StatBlob implements storeclient.BlobService from the cache store.
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	return s.cache.StatBlob(ctx, d)
}

// OpenBlob implements storeclient.BlobService from the cache store.
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	return s.cache.OpenBlob(ctx, d)
}

// NewBlobWriter returns ErrReadOnly.
func (s *Store) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	return nil, ErrReadOnly
}

// GetDirectory implements storeclient.DirectoryService from the cache
// store, and from memory for a path whose commit is still running.
func (s *Store) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	if s.nstaged.Load() > 0 {
		s.stagedMu.RLock()
		sd := s.staged[d]
		s.stagedMu.RUnlock()
		if sd != nil {
			return sd.dir, nil
		}
	}
	return s.cache.GetDirectory(ctx, d)
}

// stage makes dirs servable from memory until unstage.
func (s *Store) stage(dirs []*storeclient.Directory) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	for _, d := range dirs {
		dg := d.Digest()
		if sd := s.staged[dg]; sd != nil {
			sd.refs++
			continue
		}
		s.staged[dg] = &stagedDir{dir: d, refs: 1}
	}
	s.nstaged.Store(int64(len(s.staged)))
}

// unstage undoes stage(dirs).
func (s *Store) unstage(dirs []*storeclient.Directory) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	for _, d := range dirs {
		dg := d.Digest()
		if sd := s.staged[dg]; sd != nil {
			if sd.refs--; sd.refs == 0 {
				delete(s.staged, dg)
			}
		}
	}
	s.nstaged.Store(int64(len(s.staged)))
}

// PutDirectory returns ErrReadOnly.
func (s *Store) PutDirectory(ctx context.Context, dir *storeclient.Directory) (storeclient.Digest, error) {
	return storeclient.Digest{}, ErrReadOnly
}

// PutPathInfo returns ErrReadOnly.
func (s *Store) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	return ErrReadOnly
}

// ListPathInfos lists the paths fetched so far: those the cache store
// holds, and those whose commit is still running. A binary cache itself
// cannot be listed cheaply.
func (s *Store) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) {
		s.mu.Lock()
		var committing []*storeclient.PathInfo
		for _, f := range s.flights {
			if f.committing {
				committing = append(committing, f.info)
			}
		}
		s.mu.Unlock()
		seen := make(map[storeclient.StorePathDigest]bool, len(committing))
		for _, p := range committing {
			seen[p.StorePath.Digest] = true
			if !yield(p, nil) {
				return
			}
		}
		for p, err := range s.cache.ListPathInfos(ctx) {
			if err == nil && seen[p.StorePath.Digest] {
				continue
			}
			if !yield(p, err) {
				return
			}
		}
	}
}

// GetPathInfo returns the PathInfo of the store path with digest d from
// the cache store, fetching the path from the binary cache first if the
// cache store does not have it. A path the binary cache does not have, or
// that is refused (not signed by a trusted key), is an error wrapping
// storeclient.ErrNotFound; a fetch that fails verification wraps
// storeclient.ErrCorrupt. If ctx ends first, the fetch goes on (other
// lookups may be waiting for it, and the next lookup finds it done).
func (s *Store) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	p, err := s.cache.GetPathInfo(ctx, d)
	if err == nil || !errors.Is(err, storeclient.ErrNotFound) {
		return p, err
	}
	f, err := s.join(d)
	if err != nil {
		return nil, err
	}
	select {
	case <-f.done:
		return f.info, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("fetch %s from %s: %w", d, s.cfg, context.Cause(ctx))
	}
}

// join returns the running fetch of d, or starts one; or an ErrNotFound
// error if d was missing recently.
func (s *Store) join(d storeclient.StorePathDigest) (*flight, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("binary cache %s: store is closed", s.cfg)
	}
	if f, ok := s.flights[d]; ok {
		f.joined++
		return f, nil
	}
	if until, ok := s.missing[d]; ok {
		if s.now().Before(until) {
			return nil, fmt.Errorf("%s.narinfo: %w (remembered as missing)", d, storeclient.ErrNotFound)
		}
		delete(s.missing, d)
	}
	f := &flight{done: make(chan struct{}), joined: 1}
	s.flights[d] = f
	s.wg.Go(func() {
		fe, err := s.fetch(s.ctx, d)
		if err == nil && !fe.stored {
			if s.bgCommit && !fe.spilled {
				s.serveThenCommit(d, f, fe)
				return
			}
			err = s.commit(s.ctx, fe)
		}
		if err != nil {
			f.err = err
		} else {
			f.info = fe.info
		}
		s.mu.Lock()
		delete(s.flights, d)
		if errors.Is(f.err, storeclient.ErrNotFound) && s.cfg.NegativeTTL > 0 {
			s.rememberMissing(d)
		}
		s.mu.Unlock()
		close(f.done)
	})
	return f, nil
}

// serveThenCommit ends the flight f of d with the fetched path fe, serving
// its Directories from memory, then commits it; the flight stays joinable
// until the commit is done. A commit that fails is logged once and retried
// with backoff until it succeeds or the Store is closed: the lookup was
// answered, and its callers (a filesystem's open inodes and handles) hold
// the root node and read its Directories later, so the path is served from
// memory meanwhile rather than made unreadable under them. Close makes one
// last attempt.
func (s *Store) serveThenCommit(d storeclient.StorePathDigest, f *flight, fe *fetched) {
	s.stage(fe.dirs)
	s.mu.Lock()
	f.info = fe.info
	f.committing = true
	s.mu.Unlock()
	close(f.done)
	// The commit outlives Close's cancellation: the path is verified and
	// its blobs are stored, so Close waits for it rather than waste them.
	ctx := context.WithoutCancel(s.ctx)
	delay := s.commitRetry
	for attempt := 1; ; attempt++ {
		err := s.commit(ctx, fe)
		if err == nil {
			if attempt > 1 {
				s.log.Info("binary cache: stored a fetched path after failed attempts", "path", fe.info.StorePath.String(), "cache", s.cfg.String(), "attempts", attempt)
			}
			break
		}
		if attempt == 1 {
			s.log.Error("binary cache: storing a fetched path failed", "path", fe.info.StorePath.String(), "cache", s.cfg.String(), "err", err,
				"action", "serving it from memory and retrying")
		}
		if s.ctx.Err() != nil {
			// Closed, and this was the last attempt: the next Store
			// fetches the path again.
			s.log.Error("binary cache: gave up storing a fetched path at close", "path", fe.info.StorePath.String(), "cache", s.cfg.String(), "attempts", attempt, "err", err)
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
		}
		delay = min(2*delay, s.commitRetryMax)
	}
	s.mu.Lock()
	delete(s.flights, d)
	s.mu.Unlock()
	// Only now, with the path in the cache store (or the Store closed),
	// do its Directories leave memory.
	s.unstage(fe.dirs)
}

// rememberMissing records d in the negative cache; s.mu is held.
func (s *Store) rememberMissing(d storeclient.StorePathDigest) {
	now := s.now()
	if len(s.missing) >= maxMissing {
		for k, until := range s.missing {
			if !now.Before(until) {
				delete(s.missing, k)
			}
		}
		if len(s.missing) >= maxMissing {
			clear(s.missing)
		}
	}
	s.missing[d] = now.Add(s.cfg.NegativeTTL)
}

// Close stops running fetches, waits for them, and closes the cache store
// if the Store owns it.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.t.close()
	if s.ownCache {
		return s.cache.Close()
	}
	return nil
}

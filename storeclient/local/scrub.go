package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// Defaults of ScrubOptions.
const (
	// DefaultScrubRate re-hashes a 100 GiB store in about 3.5 hours: a
	// small share of what a disk reads, so that serving is not slowed.
	DefaultScrubRate = 8 << 20
	// DefaultScrubInterval is the pause between two passes.
	DefaultScrubInterval = 24 * time.Hour
	// DefaultScrubStartDelay is the wait before the first pass: a daemon
	// that has just started has its caches to fill and its clients to
	// serve first.
	DefaultScrubStartDelay = 5 * time.Minute
)

const (
	// scrubBufferSize is the scrubber's one read buffer: small, so that
	// no read keeps the disk long and the rate is kept in fine steps.
	scrubBufferSize = 64 << 10
	// scrubBlobCost is what every blob costs of the rate besides its
	// bytes (its open and stat, about a block read), so that a store of
	// many tiny or empty blob files is not scrubbed in a busy loop.
	scrubBlobCost = 4 << 10
	// scrubBatch is how many pack index entries a pass reads, sorts by
	// pack and offset and hashes at a time: sorted, each batch reads the
	// packs forward; bounded, the scrubber's memory stays small (about
	// 3.5 MiB) whatever the size of the store.
	scrubBatch = 1 << 16
)

// ScrubOptions says how Scrub runs.
type ScrubOptions struct {
	// BytesPerSecond bounds how fast the scrubber reads blobs; every blob
	// also counts 4 KiB for its open. Zero means DefaultScrubRate.
	BytesPerSecond int64
	// Interval is the pause between the end of a pass and the start of
	// the next. Zero means DefaultScrubInterval; negative means none.
	Interval time.Duration
	// StartDelay is the wait before the first pass. Zero means
	// DefaultScrubStartDelay; negative means none.
	StartDelay time.Duration
	// OnPass, if not nil, is called with the statistics at the end of
	// every complete pass, from Scrub's goroutine.
	OnPass func(ScrubStats)
}

func (o ScrubOptions) withDefaults() ScrubOptions {
	if o.BytesPerSecond <= 0 {
		o.BytesPerSecond = DefaultScrubRate
	}
	if o.Interval == 0 {
		o.Interval = DefaultScrubInterval
	}
	if o.StartDelay == 0 {
		o.StartDelay = DefaultScrubStartDelay
	}
	return o
}

// ScrubStats is a snapshot of a Store's scrubber (see Store.ScrubStats).
// The totals count from the Store's Open.
type ScrubStats struct {
	// Running says Scrub is running.
	Running bool
	// Passes counts the complete passes over every blob.
	Passes int64
	// Blobs and Bytes count what was hashed, in all passes.
	Blobs, Bytes int64
	// Corrupt counts the blob copies found corrupt (and quarantined);
	// Unreadable the ones that could not be read (not quarantined: a
	// read error may pass), in all passes.
	Corrupt, Unreadable int64
	// OutboardsWritten, OutboardsRepaired and OutboardsRemoved count the
	// kept outboards of good blobs that were missing and were written,
	// that did not match their blob and were written again, and those of
	// blobs the store no longer has, removed, in all passes (as in
	// VerifyStats: none of them is a fault of the store).
	OutboardsWritten, OutboardsRepaired, OutboardsRemoved int64
	// PassBlobs and PassBytes are what the current pass has hashed so
	// far (between passes, what the last one hashed); PassStarted is when
	// it started.
	PassBlobs, PassBytes int64
	PassStarted          time.Time
	// LastPassEnded is when the last complete pass ended (zero before
	// the first) and LastPassDuration how long it took.
	LastPassEnded    time.Time
	LastPassDuration time.Duration
}

// scrubState is a Store's scrubber state.
type scrubState struct {
	mu    sync.Mutex
	stats ScrubStats
}

// ScrubStats returns a snapshot of the scrubber's statistics, for
// metrics: it may be called at any time, from any goroutine.
func (s *Store) ScrubStats() ScrubStats {
	s.scrub.mu.Lock()
	defer s.scrub.mu.Unlock()
	return s.scrub.stats
}

// Scrub re-hashes every blob of the store (blob files and packed blobs),
// pass after pass, until ctx is done or the store is closed; then it
// returns an error wrapping ctx's error (or saying the store is closed).
// A blob whose bytes do not hash to its digest is quarantined and logged
// (see Quarantine in the package documentation); a blob that cannot be
// read is logged. The kept outboard of a good blob is checked, and
// written from the blob (at the same rate) if it is missing or wrong; the
// outboards of blobs the store does not have are removed (see Outboards). It reads one blob at a time with a small buffer, at most
// opts.BytesPerSecond, waits opts.StartDelay before the first pass and
// opts.Interval between passes, so that it can run next to serving (the
// daemon runs it by default). A pass that fails (a damaged meta.db hides
// the packed blobs) is logged and counted as incomplete; the next one
// runs after the interval. ScrubStats reports progress. Only one Scrub
// runs on a Store at a time; it works on a read-only store too.
func (s *Store) Scrub(ctx context.Context, opts ScrubOptions) error {
	if err := s.usable(ctx, false); err != nil {
		return fmt.Errorf("scrub store %s: %w", s.dir, err)
	}
	s.scrub.mu.Lock()
	if s.scrub.stats.Running {
		s.scrub.mu.Unlock()
		return fmt.Errorf("scrub store %s: a scrubber is running already", s.dir)
	}
	s.scrub.stats.Running = true
	s.scrub.mu.Unlock()
	defer func() {
		s.scrub.mu.Lock()
		s.scrub.stats.Running = false
		s.scrub.mu.Unlock()
	}()
	opts = opts.withDefaults()
	lim := newRateLimiter(float64(opts.BytesPerSecond), scrubBufferSize)
	buf := make([]byte, scrubBufferSize)
	s.log.Info("scrubber started", "store", s.dir, "bytes_per_second", opts.BytesPerSecond, "interval", opts.Interval, "start_delay", max(opts.StartDelay, 0))
	err := sleepCtx(ctx, opts.StartDelay)
	for err == nil {
		start := time.Now()
		s.scrub.mu.Lock()
		s.scrub.stats.PassBlobs, s.scrub.stats.PassBytes, s.scrub.stats.PassStarted = 0, 0, start
		s.scrub.mu.Unlock()
		err = s.scrubPass(ctx, lim, buf)
		if ctx.Err() != nil || errors.Is(err, errClosed) {
			break
		}
		if err != nil {
			s.log.Warn("scrub pass did not finish; the next one starts after the interval", "store", s.dir, "err", err)
		} else {
			s.scrub.mu.Lock()
			st := &s.scrub.stats
			st.Passes++
			st.LastPassEnded, st.LastPassDuration = time.Now(), time.Since(start)
			snap := *st
			s.scrub.mu.Unlock()
			s.log.Info("scrub pass done", "store", s.dir, "blobs", snap.PassBlobs, "bytes", snap.PassBytes, "duration", snap.LastPassDuration.Round(time.Millisecond), "corrupt_total", snap.Corrupt, "quarantined", s.QuarantineCount())
			if opts.OnPass != nil {
				opts.OnPass(snap)
			}
		}
		err = sleepCtx(ctx, opts.Interval)
	}
	if cerr := ctx.Err(); cerr != nil {
		err = cerr
	}
	return fmt.Errorf("scrub store %s: %w", s.dir, err)
}

// scrubPass hashes every blob file, then every packed blob, once.
func (s *Store) scrubPass(ctx context.Context, lim *rateLimiter, buf []byte) error {
	if err := s.quar.load(); err != nil {
		s.log.Warn("cannot read the quarantine", "store", s.dir, "err", err)
	}
	pace := func(n int) error { return lim.wait(ctx, n) }
	for _, shard := range shardDirs() {
		entries, err := os.ReadDir(filepath.Join(s.dir, shard))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", shard, err)
		}
		for _, e := range entries {
			d, ok := blobName(filepath.Join(filepath.Base(shard), e.Name()))
			if !ok || !e.Type().IsRegular() {
				continue // Verify reports it as stray
			}
			if err := s.scrubBlob(ctx, d, blobPlace{}, buf, pace); err != nil {
				return err
			}
		}
	}
	var batch []packedEntry
	for k, v := range s.scan(ctx, bucketPacked) {
		if k == nil {
			if errors.Is(v.err, errNoBucket) {
				break // a store of layout 2
			}
			return fmt.Errorf("scan pack index: %w", v.err)
		}
		d, err := storeclient.DigestFromBytes(k)
		if err != nil {
			continue // Verify reports it
		}
		loc, err := decodeLoc(v.value)
		if err != nil {
			continue // Verify reports it
		}
		if batch = append(batch, packedEntry{d, loc}); len(batch) == scrubBatch {
			if err := s.scrubPacked(ctx, batch, buf, pace); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := s.scrubPacked(ctx, batch, buf, pace); err != nil {
		return err
	}
	removed, err := s.sweepOutboards(ctx, pace, nil)
	s.scrub.mu.Lock()
	s.scrub.stats.OutboardsRemoved += removed
	s.scrub.mu.Unlock()
	return err
}

// scrubPacked hashes a batch of packed blobs, in the order they lie in
// their packs.
func (s *Store) scrubPacked(ctx context.Context, batch []packedEntry, buf []byte, pace func(int) error) error {
	slices.SortFunc(batch, func(a, b packedEntry) int {
		if c := cmp.Compare(a.loc.pack, b.loc.pack); c != 0 {
			return c
		}
		return cmp.Compare(a.loc.off, b.loc.off)
	})
	for _, e := range batch {
		if err := s.scrubBlob(ctx, e.d, blobPlace{packed: true, loc: e.loc}, buf, pace); err != nil {
			return err
		}
	}
	return nil
}

// scrubBlob hashes one blob copy, quarantining it if it is corrupt, and
// counts it. An error ends the pass: a done context, a closed store.
func (s *Store) scrubBlob(ctx context.Context, d storeclient.Digest, p blobPlace, buf []byte, pace func(int) error) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := pace(scrubBlobCost); err != nil {
		return err
	}
	if !s.quar.empty() && s.knownBad(d, p) {
		return nil
	}
	c, err := s.checkCopy(d, p, buf, pace)
	switch {
	case errors.Is(err, errCopyGone):
		return nil // removed or replaced since the pass listed it
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, errClosed):
		return err
	case err != nil:
		s.log.Warn("scrub: cannot check a blob", "store", s.dir, "digest", d.String(), "err", err)
		return nil
	}
	if c.unreadable {
		s.log.Warn("scrub: cannot read a blob", "store", s.dir, "digest", d.String(), "fault", c.fault)
	}
	fix := outboardGood
	if c.fault == "" {
		if fix, err = s.fixOutboard(ctx, d, c.n, pace); err != nil {
			return err // pace's: a done context
		}
	}
	s.scrub.mu.Lock()
	defer s.scrub.mu.Unlock()
	st := &s.scrub.stats
	st.Blobs++
	st.PassBlobs++
	st.Bytes += c.n
	st.PassBytes += c.n
	switch {
	case c.unreadable:
		st.Unreadable++
	case c.fault != "":
		st.Corrupt++
	}
	switch fix {
	case outboardWritten:
		st.OutboardsWritten++
	case outboardRepaired:
		st.OutboardsRepaired++
	}
	return nil
}

// knownBad reports whether the copy of d at p is quarantined already.
func (s *Store) knownBad(d storeclient.Digest, p blobPlace) bool {
	if p.packed {
		return s.quar.packedBad(d, p.loc)
	}
	fi, err := os.Stat(s.blobPath(d))
	return err == nil && s.quar.fileBad(d, idOf(fi))
}

// sleepCtx waits for d, or until ctx is done (then it returns ctx's
// error). A d of zero or less does not wait.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rateLimiter is a token bucket of bytes, for one goroutine: wait takes n
// tokens, and sleeps for the debt when there are not enough. It starts
// empty, so that the scrubber starts at its rate, not with a burst.
type rateLimiter struct {
	rate   float64 // tokens per second
	burst  float64 // the most tokens kept
	tokens float64
	last   time.Time
	// now and sleep are the clock (fakes in tests).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), last: time.Now(), now: time.Now, sleep: sleepCtx}
}

// wait takes n tokens, sleeping until they are earned if need be. It
// fails with ctx's error if ctx is done.
func (l *rateLimiter) wait(ctx context.Context, n int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := l.now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	return l.sleep(ctx, time.Duration(-l.tokens/l.rate*float64(time.Second)))
}

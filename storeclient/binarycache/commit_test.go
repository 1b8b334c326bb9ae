package binarycache

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
)

// gatedStore is a memory store whose Directory and PathInfo writes wait
// for gate, and fail while fail is set: a cache store with a slow or
// failing disk.
type gatedStore struct {
	*memory.Store
	gate       chan struct{}
	fail       atomic.Bool
	dirPuts    atomic.Int64
	infoPuts   atomic.Int64
	errStorage error
}

func newGatedStore() *gatedStore {
	return &gatedStore{Store: memory.New(), gate: make(chan struct{}), errStorage: errors.New("disk on fire")}
}

func (g *gatedStore) PutDirectory(ctx context.Context, d *storeclient.Directory) (storeclient.Digest, error) {
	<-g.gate
	if g.fail.Load() {
		return storeclient.Digest{}, g.errStorage
	}
	g.dirPuts.Add(1)
	return g.Store.PutDirectory(ctx, d)
}

func (g *gatedStore) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	<-g.gate
	if g.fail.Load() {
		return g.errStorage
	}
	g.infoPuts.Add(1)
	return g.Store.PutPathInfo(ctx, p)
}

func openBackground(t *testing.T, rawURL string, cache storeclient.Store) (*Store, *logCapture) {
	t.Helper()
	cfg, err := ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := &logCapture{}
	s, err := New(context.Background(), cfg, Options{Cache: cache, Logger: slog.New(lc), CommitInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	return s, lc
}

// TestCommitInBackground checks that a lookup is served before the
// Directories and PathInfo reach the cache store, that they are served
// from memory meanwhile, and that Close waits for them.
func TestCommitInBackground(t *testing.T) {
	f := newFixture(t, "zstd")
	cache := newGatedStore()
	s, _ := openBackground(t, f.url(""), cache)
	ctx := context.Background()

	info := checkServed(t, s, f.ca) // returns although the commit waits
	if n := pathInfos(t, cache); n != 0 {
		t.Fatalf("the cache store holds %d PathInfos before the commit, want 0", n)
	}
	if _, err := cache.Store.GetDirectory(ctx, info.Node.Digest()); !errors.Is(err, storeclient.ErrNotFound) {
		t.Fatalf("the root Directory is in the cache store before the commit: %v", err)
	}
	if n := pathInfos(t, s); n != 1 {
		t.Fatalf("the store lists %d PathInfos while the commit runs, want 1", n)
	}
	again, err := s.GetPathInfo(ctx, f.ca.sp.Digest)
	if err != nil || again != info {
		t.Fatalf("second lookup while committing: %v, %v; want the first one's PathInfo", again, err)
	}

	close(cache.gate)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if cache.infoPuts.Load() != 1 || cache.dirPuts.Load() != 1 {
		t.Fatalf("commit stored %d PathInfos and %d Directories, want 1 and 1", cache.infoPuts.Load(), cache.dirPuts.Load())
	}
	if n := pathInfos(t, cache); n != 1 {
		t.Fatalf("the cache store holds %d PathInfos after Close, want 1", n)
	}
	// Everything is now in the cache store itself.
	size, sum, err := nar.Hash(ctx, cache.Store, info.Node)
	if err != nil || size != uint64(len(f.ca.nar)) || sum != info.NarSHA256 {
		t.Fatalf("NAR of the committed path from the cache store: %d bytes, %v", size, err)
	}
	if s.nstaged.Load() != 0 {
		t.Fatalf("%d Directories still staged after the commit", s.nstaged.Load())
	}
}

// TestCommitInBackgroundFails checks that a commit that fails is logged,
// leaves nothing behind, and that the next lookup fetches the path again.
func TestCommitInBackgroundFails(t *testing.T) {
	f := newFixture(t, "xz")
	cache := newGatedStore()
	cache.fail.Store(true)
	s, lc := openBackground(t, f.url(""), cache)
	t.Cleanup(func() { s.Close() })

	checkServed(t, s, f.ca)
	close(cache.gate)
	// The flight ends when its commit has failed.
	for {
		s.mu.Lock()
		n := len(s.flights)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := lc.count("binary cache: storing a fetched path failed"); n != 1 {
		t.Fatalf("%d log lines for the failed commit, want 1", n)
	}
	if n := pathInfos(t, s); n != 0 {
		t.Fatalf("the store lists %d PathInfos after a failed commit, want 0", n)
	}
	cache.fail.Store(false)
	checkServed(t, s, f.ca)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := pathInfos(t, cache); n != 1 {
		t.Fatalf("the cache store holds %d PathInfos after the second fetch, want 1", n)
	}
}

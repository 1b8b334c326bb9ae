package binarycache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	failedPuts atomic.Int64 // Directory and PathInfo writes that failed
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
		g.failedPuts.Add(1)
		return storeclient.Digest{}, g.errStorage
	}
	g.dirPuts.Add(1)
	return g.Store.PutDirectory(ctx, d)
}

func (g *gatedStore) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	<-g.gate
	if g.fail.Load() {
		g.failedPuts.Add(1)
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

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCommitInBackgroundFails checks that a commit that fails is logged
// once, that the path already answered stays served from memory, its
// Directories included (a filesystem's clients hold its root node), and
// that the commit is retried until it succeeds, without a second fetch.
func TestCommitInBackgroundFails(t *testing.T) {
	f := newFixture(t, "xz")
	cache := newGatedStore()
	cache.fail.Store(true)
	s, lc := openBackground(t, f.url(""), cache)
	s.commitRetry, s.commitRetryMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	info := checkServed(t, s, f.ca)
	if info.Node.Kind() != storeclient.KindDirectory {
		t.Fatalf("the fixture's root is a %s, want a directory", info.Node.Kind())
	}
	close(cache.gate)
	waitFor(t, "three failed commits", func() bool { return cache.failedPuts.Load() >= 3 })
	if n := lc.count("binary cache: storing a fetched path failed"); n != 1 {
		t.Fatalf("%d log lines for the failed commits, want 1", n)
	}
	// Still served, from memory: the PathInfo, its listing and the
	// Directories.
	if _, err := s.GetDirectory(ctx, info.Node.Digest()); err != nil {
		t.Fatalf("root Directory of a path already served, after its commit failed: %v", err)
	}
	again, err := s.GetPathInfo(ctx, f.ca.sp.Digest)
	if err != nil || again != info {
		t.Fatalf("lookup after the commit failed: %v, %v; want the first one's PathInfo", again, err)
	}
	checkServed(t, s, f.ca)
	if n := pathInfos(t, s); n != 1 {
		t.Fatalf("the store lists %d PathInfos after a failed commit, want 1", n)
	}

	cache.fail.Store(false)
	waitFor(t, "the commit", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.flights) == 0
	})
	if n := pathInfos(t, cache); n != 1 {
		t.Fatalf("the cache store holds %d PathInfos after the retried commit, want 1", n)
	}
	if n := lc.count("binary cache: stored a fetched path after failed attempts"); n != 1 {
		t.Fatalf("%d log lines for the commit that succeeded, want 1", n)
	}
	if s.nstaged.Load() != 0 {
		t.Fatalf("%d Directories still staged after the commit", s.nstaged.Load())
	}
	if _, err := s.GetDirectory(ctx, info.Node.Digest()); err != nil {
		t.Fatalf("root Directory from the cache store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCommitInBackgroundFailsUntilClose checks that Close ends the retries
// of a commit that keeps failing, after one last attempt, and leaves no
// PathInfo behind.
func TestCommitInBackgroundFailsUntilClose(t *testing.T) {
	f := newFixture(t, "zstd")
	cache := newGatedStore()
	cache.fail.Store(true)
	close(cache.gate)
	s, lc := openBackground(t, f.url(""), cache)
	s.commitRetry, s.commitRetryMax = time.Hour, time.Hour
	checkServed(t, s, f.ca)
	waitFor(t, "a failed commit", func() bool { return cache.failedPuts.Load() >= 1 })
	before := cache.failedPuts.Load()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if cache.failedPuts.Load() != before+1 {
		t.Fatalf("Close made %d more attempts, want 1", cache.failedPuts.Load()-before)
	}
	if n := lc.count("binary cache: gave up storing a fetched path at close"); n != 1 {
		t.Fatalf("%d log lines for the commit given up, want 1", n)
	}
	if n := pathInfos(t, cache); n != 0 {
		t.Fatalf("the cache store holds %d PathInfos, want 0", n)
	}
}

// treeNAR returns a NAR of a directory with n subdirectories of three
// files each, all different: n+1 Directories, 4n entries.
func treeNAR(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	e := nar.NewEncoder(&b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Directory())
	for i := range n {
		must(e.Entry(fmt.Sprintf("d%02d", i)))
		must(e.Directory())
		for j := range 3 {
			content := fmt.Sprintf("file %d of directory %d\n", j, i)
			must(e.Entry(fmt.Sprintf("f%d", j)))
			must(e.File(uint64(len(content)), false))
			_, err := e.Write([]byte(content))
			must(err)
		}
		must(e.End())
	}
	must(e.End())
	must(e.Close())
	return b.Bytes()
}

// TestFetchSpillsDirectories checks that a path with more Directory
// entries than a fetch keeps in memory has its Directories stored as they
// come and is committed before the lookup is answered, background commit
// or not, and that a smaller one is still committed in the background.
func TestFetchSpillsDirectories(t *testing.T) {
	const subdirs = 10 // 11 Directories, 40 entries
	dir := t.TempDir()
	key := newTestKey(t, "k-1")
	p := iaPath(t, "many-dirs", treeNAR(t, subdirs))
	writeCache(t, dir, "zstd", []cachePath{p}, key)
	for _, tc := range []struct {
		max     int
		spilled bool
	}{{7, true}, {39, true}, {40, false}} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			cache := newGatedStore()
			s, _ := openBackground(t, "nix+file://"+dir+"?trusted-public-keys="+key.public().String(), cache)
			s.maxStagedEntries = tc.max
			if !tc.spilled {
				checkServed(t, s, p) // the commit waits for the gate
				if s.nstaged.Load() != subdirs+1 || pathInfos(t, cache) != 0 {
					t.Fatalf("%d Directories staged and %d PathInfos in the cache store while committing, want %d and 0",
						s.nstaged.Load(), pathInfos(t, cache), subdirs+1)
				}
				close(cache.gate)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				close(cache.gate)
				checkServed(t, s, p)
				// Answered only when committed, with nothing in memory.
				if n := pathInfos(t, cache); n != 1 {
					t.Fatalf("the cache store holds %d PathInfos when the lookup returns, want 1", n)
				}
				if s.nstaged.Load() != 0 {
					t.Fatalf("%d Directories staged, want 0", s.nstaged.Load())
				}
				s.mu.Lock()
				n := len(s.flights)
				s.mu.Unlock()
				if n != 0 {
					t.Fatalf("%d flights after the lookup, want 0", n)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := cache.dirPuts.Load(); n != subdirs+1 {
				t.Fatalf("%d Directories stored, want %d", n, subdirs+1)
			}
		})
	}
}

// TestStagingSpills checks the staging's bound: Directories are kept up to
// maxEntries entries, then those kept and all that follow are stored in
// the cache store, in order.
func TestStagingSpills(t *testing.T) {
	ctx := context.Background()
	cache := newGatedStore()
	close(cache.gate)
	st := stagingFor(cache, 5)
	var all []*storeclient.Directory
	for i := range 6 {
		var es []storeclient.Entry
		for j := range 2 {
			es = append(es, storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("f%d", j)), Node: storeclient.FileNode(storeclient.HashBytes([]byte{byte(i), byte(j)}), 2, false)})
		}
		d, err := storeclient.NewDirectory(es...)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, d)
	}
	// 2 and 4 entries: kept.
	if _, err := st.PutDirectory(ctx, all[0]); err != nil {
		t.Fatal(err)
	}
	if err := st.PutDirectories(ctx, all[1:2]); err != nil {
		t.Fatal(err)
	}
	if st.spilled || len(st.dirs) != 2 || cache.dirPuts.Load() != 0 {
		t.Fatalf("spilled %v, %d kept, %d stored; want false, 2, 0", st.spilled, len(st.dirs), cache.dirPuts.Load())
	}
	// 6 entries: all three stored.
	if err := st.PutDirectories(ctx, all[2:3]); err != nil {
		t.Fatal(err)
	}
	if !st.spilled || len(st.dirs) != 0 || cache.dirPuts.Load() != 3 {
		t.Fatalf("spilled %v, %d kept, %d stored; want true, 0, 3", st.spilled, len(st.dirs), cache.dirPuts.Load())
	}
	// Then passed through.
	if err := st.PutDirectories(ctx, all[3:5]); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutDirectory(ctx, all[5]); err != nil {
		t.Fatal(err)
	}
	if len(st.dirs) != 0 || cache.dirPuts.Load() != 6 || st.ndirs != 6 {
		t.Fatalf("%d kept, %d stored, %d put; want 0, 6, 6", len(st.dirs), cache.dirPuts.Load(), st.ndirs)
	}
	for _, d := range all {
		if _, err := cache.GetDirectory(ctx, d.Digest()); err != nil {
			t.Fatal(err)
		}
	}
}

package cache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/cache"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestConformance(t *testing.T) {
	storetest.TestStore(t, func(t *testing.T) storeclient.Store {
		return cache.New(memory.New(), memory.New(), quiet())
	})
}

// counting wraps a store, counts OpenBlob and GetDirectory calls and can
// hold OpenBlob until released.
type counting struct {
	storeclient.Store
	opens, gets atomic.Int64
	misses      atomic.Int64 // OpenBlob calls answered with not-found
	gate        chan struct{}
}

func (c *counting) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	c.opens.Add(1)
	if c.gate != nil {
		<-c.gate
	}
	r, err := c.Store.OpenBlob(ctx, d)
	if errors.Is(err, storeclient.ErrNotFound) {
		c.misses.Add(1)
	}
	return r, err
}

func (c *counting) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	c.gets.Add(1)
	return c.Store.GetDirectory(ctx, d)
}

// TestSingleflight: 100 concurrent readers of a blob missing from the fast
// store cause exactly one fetch from the slow one.
func TestSingleflight(t *testing.T) {
	ctx := t.Context()
	slowMem := memory.New()
	if err := storetest.PutBlob(ctx, slowMem, storetest.BlobB); err != nil {
		t.Fatal(err)
	}
	slow := &counting{Store: slowMem, gate: make(chan struct{})}
	fast := &counting{Store: memory.New()}
	c := cache.New(fast, slow, quiet())
	defer c.Close()
	d := storeclient.HashBytes(storetest.BlobB)

	const readers = 100
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			r, err := c.OpenBlob(ctx, d)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			got := make([]byte, r.Size())
			if n, err := r.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) || !bytes.Equal(got, storetest.BlobB) {
				errs <- errors.New("wrong content")
			}
		})
	}
	// Release the slow store once every reader has missed the fast one
	// (and so is in, or about to join, the shared fill).
	for fast.misses.Load() < readers {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		default:
		}
		if slow.opens.Load() > 1 {
			break // already failing; do not wait forever
		}
		runtime.Gosched()
	}
	close(slow.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := slow.opens.Load(); n != 1 {
		t.Errorf("%d concurrent readers caused %d fetches from the slow store, want 1", readers, n)
	}
	// Later reads are served by the fast store.
	if _, err := c.OpenBlob(ctx, d); err != nil || slow.opens.Load() != 1 {
		t.Errorf("a later read = %v, slow fetches %d; want served from the fast store", err, slow.opens.Load())
	}
}

// TestDirectoryFill: a Directory read fills its whole subtree, leaves
// first, into the fast store.
func TestDirectoryFill(t *testing.T) {
	ctx := t.Context()
	f := storetest.NewFixtures()
	slowMem := memory.New()
	if err := f.Fill(ctx, slowMem, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	slow := &counting{Store: slowMem}
	fast := memory.New()
	c := cache.New(fast, slow, quiet())
	defer c.Close()
	got, err := c.GetDirectory(ctx, f.DirectoryD.Digest())
	if err != nil || got.Digest() != f.DirectoryD.Digest() {
		t.Fatalf("GetDirectory(D) = %v, %v", got, err)
	}
	for _, dir := range []*storeclient.Directory{f.DirectoryD, f.DirectoryB, f.DirectoryA} {
		if _, err := fast.GetDirectory(ctx, dir.Digest()); err != nil {
			t.Errorf("fast store lacks %s after reading D: %v", dir.Digest(), err)
		}
	}
	before := slow.gets.Load()
	if _, err := c.GetDirectory(ctx, f.DirectoryB.Digest()); err != nil || slow.gets.Load() != before {
		t.Errorf("GetDirectory(B) after D = %v with %d slow reads, want served from the fast store", err, slow.gets.Load()-before)
	}
	// PathInfos come from the slow store and are copied.
	sp, err := storeclient.ParseStorePathBasename(storetest.RootComplicated)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPathInfo(ctx, sp.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := fast.GetPathInfo(ctx, sp.Digest); err != nil {
		t.Errorf("pathinfo not copied to the fast store: %v", err)
	}
	if _, err := c.GetPathInfo(ctx, storeclient.StorePathDigest{9}); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("GetPathInfo(missing) = %v, want ErrNotFound", err)
	}
}

// TestCorruptSlow: a slow store serving wrong bytes does not fill the fast
// store.
func TestCorruptSlow(t *testing.T) {
	ctx := t.Context()
	slowMem := memory.New()
	if err := storetest.PutBlob(ctx, slowMem, storetest.HelloWorld); err != nil {
		t.Fatal(err)
	}
	slow := &lying{Store: slowMem, want: storeclient.HashBytes([]byte("other"))}
	fast := memory.New()
	c := cache.New(fast, slow, quiet())
	defer c.Close()
	if _, err := c.OpenBlob(ctx, slow.want); !errors.Is(err, storeclient.ErrCorrupt) {
		t.Fatalf("OpenBlob of a blob the slow store corrupts = %v, want ErrCorrupt", err)
	}
	if _, err := fast.StatBlob(ctx, slow.want); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("corrupt blob reached the fast store: %v", err)
	}
}

// lying answers OpenBlob(want) with the HelloWorld blob.
type lying struct {
	storeclient.Store
	want storeclient.Digest
}

func (l *lying) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if d == l.want {
		d = storeclient.HashBytes(storetest.HelloWorld)
	}
	return l.Store.OpenBlob(ctx, d)
}

// TestCapabilities checks which store capabilities the cache passes on:
// trust from its fast store, whatever the slow one is, and nothing that
// would need a fill from the slow store to answer.
func TestCapabilities(t *testing.T) {
	tests := []struct {
		name        string
		fast, slow  storeclient.Store
		wantTrusted bool
	}{
		{"trusted fast, untrusted slow", memory.New(), &counting{Store: memory.New()}, true},
		{"untrusted fast, trusted slow", &counting{Store: memory.New()}, memory.New(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cache.New(tt.fast, tt.slow, quiet())
			defer s.Close()
			if got := storeclient.IsTrustedLocal(s); got != tt.wantTrusted {
				t.Errorf("IsTrustedLocal = %v, want %v", got, tt.wantTrusted)
			}
			var st storeclient.Store = s
			if _, ok := st.(storeclient.BlobFiler); ok {
				t.Error("the cache is a BlobFiler: a blob not yet in the fast store has no file")
			}
			if _, ok := st.(storeclient.BlobPrefetcher); ok {
				t.Error("the cache is a BlobPrefetcher")
			}
		})
	}
}

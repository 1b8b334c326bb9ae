package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// metaDBFiles counts this process's descriptors open on the meta.db of
// dir.
func metaDBFiles(t *testing.T, dir string) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd to count descriptors: %v", err)
	}
	want := filepath.Join(dir, dbFile)
	n := 0
	for _, e := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, want) {
			n++
		}
	}
	return n
}

// TestDBOpensBounded runs many GetDirectory calls at once, each holding
// meta.db open a little longer than usual: no more than maxDBOpens
// descriptors of meta.db may be open at any time, counted both in
// /proc/self/fd and by the transactions themselves.
func TestDBOpensBounded(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	w, err := Open(ctx, dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	f := storetest.NewFixtures()
	if err := f.Fill(ctx, w, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	s, err := Open(ctx, dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var open, most atomic.Int32
	s.testHookDBOpen = func() {
		n := open.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond) // let the others pile up
		open.Add(-1)
	}
	stop := make(chan struct{})
	sampled := make(chan int)
	go func() {
		mostFDs := 0
		for {
			select {
			case <-stop:
				sampled <- mostFDs
				return
			default:
			}
			// A listing of /proc/self/fd is read link by link, so a
			// descriptor closed and reused by another transaction
			// while it is read is counted twice: a count over the bound
			// counts only if two more listings right after agree.
			n := metaDBFiles(t, dir)
			if n > maxDBOpens {
				n = min(n, metaDBFiles(t, dir), metaDBFiles(t, dir))
			}
			mostFDs = max(mostFDs, n)
		}
	}()
	const callers = 64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range 4 {
				if _, err := s.GetDirectory(ctx, f.DirectoryComplicated.Digest()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	mostFDs := <-sampled
	t.Logf("%d callers: at most %d transactions had meta.db open, at most %d descriptors seen", callers, most.Load(), mostFDs)
	if got := most.Load(); got > maxDBOpens || got < 2 {
		t.Errorf("at most %d transactions had meta.db open at once, want 2 to %d", got, maxDBOpens)
	}
	if mostFDs > maxDBOpens {
		t.Errorf("%d descriptors of meta.db were open at once, want at most %d", mostFDs, maxDBOpens)
	}
}

// TestDBOpenWaitCancelled checks that a call waiting for its turn to open
// meta.db gives up when its context ends.
func TestDBOpenWaitCancelled(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store"), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release := make(chan struct{})
	var holding sync.WaitGroup
	holding.Add(maxDBOpens)
	s.testHookDBOpen = func() {
		holding.Done()
		<-release
	}
	var wg sync.WaitGroup
	for range maxDBOpens {
		wg.Go(func() { s.GetPathInfo(ctx, storeclient.StorePathDigest{1}) })
	}
	holding.Wait() // every slot is taken
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = s.GetPathInfo(wctx, storeclient.StorePathDigest{2})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetPathInfo waiting for a turn to open meta.db = %v, want its context's deadline", err)
	}
	close(release)
	wg.Wait()
}

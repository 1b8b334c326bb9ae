package fuse

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// gatedPathInfo is a store whose GetPathInfo waits until open is closed or
// its context ends: a slow backend.
type gatedPathInfo struct {
	storeclient.Store
	entered chan struct{}
	open    chan struct{}
}

func (g *gatedPathInfo) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	g.entered <- struct{}{}
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.GetPathInfo(ctx, d)
}

// A process that gets a signal while the daemon waits for the backend makes
// the kernel send INTERRUPT; go-fuse cancels the request's context and the
// process gets EINTR for that call (which programs retry), not EIO. Go's
// runtime signals busy threads all the time (SIGURG preemption), so Go
// programs reading a mount under load are interrupted routinely: CI once
// saw an os.Open fail with EIO this way.
func TestInterruptedLookup(t *testing.T) {
	g := &gatedPathInfo{Store: fixtureVFS(t), entered: make(chan struct{}, 8), open: make(chan struct{})}
	srv := mountFS(t, newVFS(t, g), MountOptions{})
	p := filepath.Join(srv.Dir(), storetest.RootBlobA)

	tid := make(chan int, 1)
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		var st unix.Stat_t
		res <- unix.Stat(p, &st) // the raw call: no retry on EINTR
	}()
	thread := <-tid
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup never reached the store")
	}
	if err := unix.Tgkill(os.Getpid(), thread, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != unix.EINTR {
			t.Errorf("interrupted stat = %v, want EINTR", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the interrupted stat did not return")
	}
	close(g.open)
	if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(storetest.BlobA)) {
		t.Errorf("stat after the interrupt: %v, %v", fi, err)
	}
}

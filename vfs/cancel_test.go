package vfs_test

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

// gated is an untrusted store whose GetDirectory calls and blob reads wait
// for open to be closed (or for their context to end), counting the calls.
type gated struct {
	storeclient.Store
	open     chan struct{}
	dirCalls atomic.Int32
	entered  chan struct{} // one send per gated call entered
}

func newGated(s storeclient.Store) *gated {
	return &gated{Store: s, open: make(chan struct{}), entered: make(chan struct{}, 64)}
}

func (g *gated) wait(ctx context.Context) error {
	g.entered <- struct{}{}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gated) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	g.dirCalls.Add(1)
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.Store.GetDirectory(ctx, d)
}

func (g *gated) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := g.Store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	return gatedReader{r, g}, nil
}

type gatedReader struct {
	storeclient.BlobReader
	g *gated
}

func (r gatedReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.g.wait(context.Background()); err != nil {
		return 0, err
	}
	return r.BlobReader.ReadAt(p, off)
}

func waitEntered(t *testing.T, g *gated) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend call was never made")
	}
}

func waitErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// cancelledAlone runs call twice against g. The first call's context is
// cancelled once it reached the store: it must fail with EINTR at once,
// while the gate is still shut. The second call starts while the first
// one's store call still waits at the gate, so it shares it: after the
// gate opens it must succeed.
func cancelledAlone(t *testing.T, g *gated, what string, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { first <- call(ctx) }()
	waitEntered(t, g)
	cancel()
	if err := waitErr(t, "the cancelled "+what, first); vfs.Errno(err) != syscall.EINTR {
		t.Fatalf("cancelled %s = %v (errno %d), want EINTR", what, err, vfs.Errno(err))
	}
	second := make(chan error, 1)
	go func() { second <- call(t.Context()) }()
	time.Sleep(20 * time.Millisecond) // let it join the store call still waiting at the gate
	close(g.open)
	if err := waitErr(t, "the second "+what, second); err != nil {
		t.Fatalf("%s sharing a cancelled caller's store call: %v", what, err)
	}
}

// A caller whose context is cancelled while the backend works (a FUSE
// interrupt, a 9P flush) gets EINTR at once, not EIO; the backend call it
// started goes on for the callers sharing it, who get their answer.
func TestCancelledLookupAlone(t *testing.T) {
	g := newGated(vfstest.Untrusted(fixtures(t)))
	fsys := newFS(t, g, vfs.Options{})
	top := walk(t, fsys, storetest.RootWithKeep)

	cancelledAlone(t, g, "lookup", func(ctx context.Context) error {
		_, err := fsys.Lookup(ctx, top, ".keep")
		return err
	})
	if n := g.dirCalls.Load(); n != 1 {
		t.Errorf("GetDirectory called %d times, want 1 (the fetch must survive its first caller)", n)
	}
}

// The same for the verification of an untrusted blob, which is shared by
// concurrent opens and reads through a reader of its own.
func TestCancelledOpenAlone(t *testing.T) {
	g := newGated(vfstest.Untrusted(fixtures(t)))
	fsys := newFS(t, g, vfs.Options{})
	n := walk(t, fsys, storetest.RootBlobB)

	var got []byte
	calls := 0
	cancelledAlone(t, g, "open", func(ctx context.Context) error {
		calls++
		f, err := fsys.Open(ctx, n)
		if err != nil {
			return err
		}
		defer f.Close()
		if calls == 2 {
			got, err = io.ReadAll(io.NewSectionReader(f, 0, int64(len(storetest.BlobB))))
		}
		return err
	})
	if !bytes.Equal(got, storetest.BlobB) {
		t.Errorf("read %d bytes, not the blob's %d", len(got), len(storetest.BlobB))
	}
}

package fuse

import (
	"context"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// Blob files of a local store lie in digest order on disk, not in the
// order of the directories that name them, so a cold read of many small
// files costs one random disk access after another. When a file of a
// directory is first opened, the prefetcher asks the kernel to read the
// other small files of that directory in the background, many at once
// (open, posix_fadvise WILLNEED, close): the disk then works on them in
// parallel, and the reads that follow find them in the page cache. Only
// whole small blobs are prefetched, each directory once per node.
const (
	prefetchWorkers  = 64
	prefetchQueue    = 4096
	prefetchMaxBytes = 1 << 20 // larger files are read ahead by the kernel as they are read
)

// prefetcher owns its worker goroutines: start them with start, end them
// with stop (Server.Unmount does both through Mount).
type prefetcher struct {
	files BlobFiler
	queue chan storeclient.Digest
	wg    sync.WaitGroup
	ctx   context.Context
	stopF context.CancelFunc
	on    atomic.Bool
}

func newPrefetcher(files BlobFiler) *prefetcher {
	return &prefetcher{files: files, queue: make(chan storeclient.Digest, prefetchQueue)}
}

// start starts the workers.
func (p *prefetcher) start() {
	p.ctx, p.stopF = context.WithCancel(context.Background())
	for range prefetchWorkers {
		p.wg.Go(p.work)
	}
	p.on.Store(true)
}

// stop ends the workers and waits for them.
func (p *prefetcher) stop() {
	if !p.on.Swap(false) {
		return
	}
	p.stopF()
	p.wg.Wait()
}

func (p *prefetcher) work() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case d := <-p.queue:
			f, err := p.files.BlobFile(p.ctx, d)
			if err != nil {
				continue
			}
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED)
			f.Close()
		}
	}
}

// directory queues the small files of dir, never blocking: a full queue
// drops the rest.
func (p *prefetcher) directory(ctx context.Context, fsys *vfs.FS, dir vfs.Node) {
	if !p.on.Load() {
		return
	}
	es, err := fsys.ReadDir(ctx, dir, 0, 0)
	if err != nil {
		return
	}
	for _, e := range es {
		sn := e.Node.StoreNode()
		if e.Node.Kind() != storeclient.KindFile || sn.Size() == 0 || sn.Size() > prefetchMaxBytes {
			continue
		}
		select {
		case p.queue <- sn.Digest():
		default:
			return
		}
	}
}

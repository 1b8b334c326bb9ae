package fuse

import (
	"context"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// A cold read of many small files costs one disk access after another
// unless the disk is given the work in advance. When a file of a directory
// is first opened, the prefetcher asks the kernel to read the other small
// files of that directory in the background:
//
//   - a store that packs small blobs (BlobPrefetcher, the local store)
//     reads them ahead as ranges of its pack files: the files of one
//     directory lie together there, so this is one sequential read;
//   - blobs that are files of their own (big blobs, stores written before
//     packs) lie in digest order on disk, so each is opened and advised
//     (posix_fadvise WILLNEED) by many workers at once: the disk then works
//     on them in parallel, and the reads that follow find them in the page
//     cache.
//
// Only whole small blobs are prefetched, each directory once per node.
const (
	prefetchWorkers  = 64
	prefetchQueue    = 4096
	prefetchMaxBytes = 1 << 20 // larger files are read ahead by the kernel as they are read
)

// prefetchJob is a directory's small blobs for WillNeed (batch), or one
// blob to advise (digest, of size bytes).
type prefetchJob struct {
	batch  []storeclient.Digest
	sizes  map[storeclient.Digest]int64 // of the batch
	digest storeclient.Digest
	size   int64
}

// prefetcher owns its worker goroutines: start them with start, end them
// with stop (Server.Unmount does both through Mount).
type prefetcher struct {
	files BlobFiler
	ahead BlobPrefetcher // nil: every blob is advised as a file of its own
	queue chan prefetchJob
	wg    sync.WaitGroup
	ctx   context.Context
	stopF context.CancelFunc
	on    atomic.Bool
}

func newPrefetcher(files BlobFiler) *prefetcher {
	p := &prefetcher{files: files, queue: make(chan prefetchJob, prefetchQueue)}
	p.ahead, _ = files.(BlobPrefetcher)
	return p
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
		case j := <-p.queue:
			if j.batch != nil {
				rest, err := p.ahead.WillNeed(p.ctx, j.batch)
				if err != nil {
					continue
				}
				for _, d := range rest {
					if !p.enqueue(prefetchJob{digest: d, size: j.sizes[d]}) {
						break
					}
				}
				continue
			}
			f, off, err := p.files.BlobFile(p.ctx, j.digest)
			if err != nil {
				continue
			}
			unix.Fadvise(int(f.Fd()), off, j.size, unix.FADV_WILLNEED)
			f.Close()
		}
	}
}

// enqueue queues a job, never blocking: it reports false if the queue is
// full.
func (p *prefetcher) enqueue(j prefetchJob) bool {
	select {
	case p.queue <- j:
		return true
	default:
		return false
	}
}

// directory queues the small files of dir, never blocking.
func (p *prefetcher) directory(ctx context.Context, fsys *vfs.FS, dir vfs.Node) {
	if !p.on.Load() {
		return
	}
	es, err := fsys.ReadDir(ctx, dir, 0, 0)
	if err != nil {
		return
	}
	batch := prefetchJob{sizes: make(map[storeclient.Digest]int64)}
	for _, e := range es {
		sn := e.Node.StoreNode()
		if e.Node.Kind() != storeclient.KindFile || sn.Size() == 0 || sn.Size() > prefetchMaxBytes {
			continue
		}
		if p.ahead == nil {
			if !p.enqueue(prefetchJob{digest: sn.Digest(), size: int64(sn.Size())}) {
				return
			}
			continue
		}
		batch.batch = append(batch.batch, sn.Digest())
		batch.sizes[sn.Digest()] = int64(sn.Size())
	}
	if len(batch.batch) > 0 {
		// The store looks the blobs up in its index: a worker does it,
		// so the open that triggered this does not wait.
		p.enqueue(batch)
	}
}

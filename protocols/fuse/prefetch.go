package fuse

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// A cold read of many small files costs one disk access after another,
// and one READ round trip to the daemon per file, unless the work is done
// in advance. When a file of a directory is first opened, the prefetcher
// works through the other small files of that directory in the
// background:
//
//   - a store that packs small blobs (BlobPrefetcher, the local store)
//     reads them ahead as ranges of its pack files (the files of one
//     directory lie together there, so this is one sequential read); the
//     prefetcher then reads each packed file and stores its bytes in the
//     kernel's page cache of the FUSE file (FUSE_NOTIFY_STORE), so that
//     the reads that follow are served by the kernel without a READ
//     request;
//   - blobs that are files of their own (big blobs, stores written before
//     packs, which passthrough may hand to the kernel) lie in digest order
//     on disk, so each is opened and advised (posix_fadvise WILLNEED) by
//     many workers at once: the disk then works on them in parallel, and
//     the reads that follow find them in the page cache.
//
// Only whole small blobs are prefetched, each directory once per node.
const (
	prefetchWorkers  = 64
	prefetchQueue    = 4096
	prefetchMaxBytes = 1 << 20 // larger files are read ahead by the kernel as they are read
	// pushMaxBytes bounds what one directory stores in the kernel's page
	// cache ahead of its reads.
	pushMaxBytes = 64 << 20
)

// prefetchFile is a small file of a directory.
type prefetchFile struct {
	name string
	d    storeclient.Digest
	size int64
}

// prefetchJob is a directory's small files (dir set), or one blob file to
// advise.
type prefetchJob struct {
	dir   *fs.Inode
	files []prefetchFile
	one   prefetchFile
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
	bufs  sync.Pool // *[]byte of prefetchMaxBytes, for pushing file contents
}

func newPrefetcher(files BlobFiler) *prefetcher {
	p := &prefetcher{files: files, queue: make(chan prefetchJob, prefetchQueue)}
	p.ahead, _ = files.(BlobPrefetcher)
	p.bufs.New = func() any { b := make([]byte, prefetchMaxBytes); return &b }
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
			if j.dir != nil {
				p.directoryJob(j)
				continue
			}
			f, off, err := p.files.BlobFile(p.ctx, j.one.d)
			if err != nil {
				continue
			}
			unix.Fadvise(int(f.Fd()), off, j.one.size, unix.FADV_WILLNEED)
			f.Close()
		}
	}
}

// directoryJob reads a directory's packed files ahead and stores them in
// the kernel's cache, in directory order (the order a walk reads them),
// and queues the others to be advised.
func (p *prefetcher) directoryJob(j prefetchJob) {
	ds := make([]storeclient.Digest, len(j.files))
	for i, f := range j.files {
		ds[i] = f.d
	}
	rest, err := p.ahead.WillNeed(p.ctx, ds)
	if err != nil {
		return
	}
	unpacked := make(map[storeclient.Digest]bool, len(rest))
	for _, d := range rest {
		unpacked[d] = true
	}
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	var pushed int64
	for _, f := range j.files {
		if p.ctx.Err() != nil {
			return
		}
		if unpacked[f.d] {
			if !p.enqueue(prefetchJob{one: f}) {
				return
			}
			continue
		}
		if pushed+f.size > pushMaxBytes {
			continue
		}
		pushed += f.size
		p.push(j.dir, f, (*bp)[:f.size])
	}
}

// push stores the content of f, a file of dir, in the kernel's page cache
// of its FUSE file, if the kernel knows the file (a READDIRPLUS or LOOKUP
// made it); otherwise the kernel reads it when it is read.
func (p *prefetcher) push(dir *fs.Inode, f prefetchFile, buf []byte) {
	child := dir.GetChild(f.name)
	if child == nil {
		return
	}
	r, err := p.files.OpenBlob(p.ctx, f.d)
	if err != nil {
		return
	}
	defer r.Close()
	if r.Size() != f.size {
		return
	}
	n, err := r.ReadAt(buf, 0)
	if n != len(buf) || (err != nil && !errors.Is(err, io.EOF)) {
		return
	}
	child.WriteCache(0, buf)
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
func (p *prefetcher) directory(ctx context.Context, dir *dirNode) {
	if !p.on.Load() {
		return
	}
	es, err := dir.fs.vfs.ReadDir(ctx, dir.n, 0, vfs.ReadDirAll)
	if err != nil {
		return
	}
	j := prefetchJob{dir: dir.EmbeddedInode()}
	for _, e := range es {
		sn := e.Node.StoreNode()
		if e.Node.Kind() != storeclient.KindFile || sn.Size() == 0 || sn.Size() > prefetchMaxBytes {
			continue
		}
		f := prefetchFile{name: string(e.Name), d: sn.Digest(), size: int64(sn.Size())}
		if p.ahead == nil {
			if !p.enqueue(prefetchJob{one: f}) {
				return
			}
			continue
		}
		j.files = append(j.files, f)
	}
	if len(j.files) > 0 {
		// The store looks the blobs up in its index and reads them: a
		// worker does it, so the open that triggered this does not wait.
		p.enqueue(j)
	}
}

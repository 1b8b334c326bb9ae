package fuse

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// A cold read of many small files costs one disk access after another,
// and one READ round trip to the daemon per file, unless the work is done
// in advance. When a file of a directory is first opened, the prefetcher
// works through the other small files of that directory in the
// background, through vfs (which reads ahead only a store that keeps its
// blobs as trusted local files, vfs.FS.LocalBlobFiles):
//
//   - vfs.FS.Prefetch has the store read them ahead where it can (the
//     local store reads its packed blobs as ranges of its pack files; the
//     files of one directory lie together there, so this is one
//     sequential read); the prefetcher then reads each file read ahead
//     (vfs.FS.ReadPrefetched) and stores its bytes in the kernel's page
//     cache of the FUSE file (FUSE_NOTIFY_STORE), so that the reads that
//     follow are served by the kernel without a READ request;
//   - the others (blobs that are files of their own: big blobs, stores
//     written before packs, which passthrough may hand to the kernel) lie
//     in digest order on disk, so each is advised by vfs.FS.PrefetchFile
//     from many workers at once: the disk then works on them in parallel,
//     and the reads that follow find them in the page cache.
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
	n    vfs.Node
	size int64
}

// prefetchJob is a directory's small files (dir set), or one file to
// advise.
type prefetchJob struct {
	dir   *fs.Inode
	files []prefetchFile
	one   prefetchFile
}

// prefetcher owns its worker goroutines: start them with start, end them
// with stop (Server.Unmount does both through Mount).
type prefetcher struct {
	fs    *vfs.FS
	queue chan prefetchJob
	wg    sync.WaitGroup
	ctx   context.Context
	stopF context.CancelFunc
	on    atomic.Bool
	bufs  sync.Pool // *[]byte of prefetchMaxBytes, for pushing file contents
}

// newPrefetcher returns a prefetcher reading ahead through fsys.
func newPrefetcher(fsys *vfs.FS) *prefetcher {
	p := &prefetcher{fs: fsys, queue: make(chan prefetchJob, prefetchQueue)}
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
			// A hint: a file that cannot be advised is read when it is
			// read, and vfs logs what is wrong with the store then.
			_ = p.fs.PrefetchFile(p.ctx, j.one.n)
		}
	}
}

// directoryJob has vfs read a directory's files ahead, stores those it
// read ahead in the kernel's cache, in directory order (the order a walk
// reads them), and queues the others to be advised.
func (p *prefetcher) directoryJob(j prefetchJob) {
	ns := make([]vfs.Node, len(j.files))
	for i, f := range j.files {
		ns[i] = f.n
	}
	ahead, rest, err := p.fs.Prefetch(p.ctx, ns)
	if err != nil {
		return
	}
	isAhead := make(map[storeclient.Digest]bool, len(ahead))
	for _, n := range ahead {
		isAhead[n.StoreNode().Digest()] = true
	}
	isRest := make(map[storeclient.Digest]bool, len(rest))
	for _, n := range rest {
		isRest[n.StoreNode().Digest()] = true
	}
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	var pushed int64
	for _, f := range j.files {
		if p.ctx.Err() != nil {
			return
		}
		d := f.n.StoreNode().Digest()
		if isRest[d] {
			if !p.enqueue(prefetchJob{one: f}) {
				return
			}
			continue
		}
		if !isAhead[d] || pushed+f.size > pushMaxBytes {
			continue
		}
		pushed += f.size
		p.push(j.dir, f, *bp)
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
	b, err := p.fs.ReadPrefetched(p.ctx, f.n, buf)
	if err != nil {
		return
	}
	child.WriteCache(0, b)
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
		j.files = append(j.files, prefetchFile{name: string(e.Name), n: e.Node, size: int64(sn.Size())})
	}
	if len(j.files) > 0 {
		// The store looks the blobs up in its index and reads them: a
		// worker has vfs do it, so the open that triggered this does not
		// wait.
		p.enqueue(j)
	}
}

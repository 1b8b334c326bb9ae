package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"golang.org/x/sync/semaphore"

	"github.com/storefs/storefs/storeclient"
)

// fileJob is one small file handed to a worker, in a jobBatch: the worker
// stores its blob (and, for ImportPath, reads it first); done is closed
// when its whole batch is finished.
type fileJob struct {
	path       string // ImportPath: the file to read
	size       uint64
	executable bool
	data       []byte // contents; for ImportPath filled by the worker
	digest     storeclient.Digest
	err        error
	done       chan struct{} // the batch's
}

// jobBatch is a run of small-file jobs that one worker does in order. A
// worker wakes, and the consumer of the jobs waits, once per batch rather
// than once per file: on a tree of many small files, per-file goroutine
// handoffs cost more than reading the files.
type jobBatch struct {
	jobs  []*fileJob
	bytes uint64
	done  chan struct{} // closed when every job of the batch is finished
}

// A batch is sent to the workers when it holds batchFiles files or
// batchBytes bytes.
const (
	batchFiles = 64
	batchBytes = 2 << 20
)

// batcher groups the jobs of a dispatcher (the walker of ImportPath, the
// NAR reader of ImportNAR) into batches for the workers.
type batcher struct {
	out chan *jobBatch
	cur *jobBatch
}

func newBatcher(workers int) *batcher {
	return &batcher{out: make(chan *jobBatch, workers)}
}

// add appends j to the current batch, and sends the batch when it is
// full. j belongs to the workers from then on.
func (b *batcher) add(ctx context.Context, j *fileJob) error {
	if b.cur == nil {
		b.cur = &jobBatch{jobs: make([]*fileJob, 0, batchFiles), done: make(chan struct{})}
	}
	j.done = b.cur.done
	b.cur.jobs = append(b.cur.jobs, j)
	b.cur.bytes += j.size
	if len(b.cur.jobs) >= batchFiles || b.cur.bytes >= batchBytes {
		return b.flush(ctx)
	}
	return nil
}

// flush sends the current batch, if any, to the workers. The dispatcher
// calls it before anything that may wait for a job to finish (a wait for
// the memory budget, a full queue to the sequencer, the end of a
// directory), so that no one waits for a job that was never sent.
func (b *batcher) flush(ctx context.Context) error {
	if b.cur == nil {
		return nil
	}
	select {
	case b.out <- b.cur:
		b.cur = nil
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// close flushes nothing: it tells the workers that no more batches come.
func (b *batcher) close() { close(b.out) }

// runBatches is a worker: it does every job of every batch with do until
// the dispatcher closes the queue. After a cancellation the remaining jobs
// fail with its cause.
func runBatches(ctx context.Context, in <-chan *jobBatch, do func(*fileJob) error) {
	for b := range in {
		for _, j := range b.jobs {
			if ctx.Err() != nil {
				j.err = context.Cause(ctx)
			} else {
				j.err = do(j)
			}
		}
		close(b.done)
	}
}

// wait waits for the worker to finish j.
func (j *fileJob) wait(ctx context.Context) error {
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (j *fileJob) node() storeclient.Node {
	return storeclient.FileNode(j.digest, j.size, j.executable)
}

// streamChunk is the size of the pieces a big file is streamed in, and
// streamBuffers how many of them are in flight between the reader, the
// blob writer and the tee.
const (
	streamChunk   = 1 << 20
	streamBuffers = 6
)

// streamBlob copies exactly size bytes from src into a new blob and returns
// its digest (computed by the store's writer while it writes). Each chunk
// is also written to tee (the NAR hash). Reading, storing (BLAKE3 and
// write) and the tee (sha256) run as a pipeline of three goroutines, each
// on its own chunk: the calling goroutine reads, and every chunk passes
// from the writer goroutine to the tee goroutine in order, so the tee sees
// the bytes in order. what names the source in errors.
func streamBlob(ctx context.Context, store storeclient.BlobService, src io.Reader, size uint64, tee io.Writer, what string) (storeclient.Digest, error) {
	w, err := store.NewBlobWriter(ctx)
	if err != nil {
		return storeclient.Digest{}, fmt.Errorf("store %s: %w", what, err)
	}
	defer w.Close()

	chunk := min(streamChunk, size)
	nbuf := min(streamBuffers, int((size+chunk-1)/chunk)+1)
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, chunk)
	}
	full := make(chan []byte, nbuf)
	written := free // with no tee, the writer hands chunks straight back
	var teeErr error
	var teeDone chan struct{}
	if tee != nil {
		written = make(chan []byte, nbuf)
		teeDone = make(chan struct{})
		go func() {
			defer close(teeDone)
			for b := range written {
				if teeErr == nil {
					_, teeErr = tee.Write(b)
				}
				free <- b
			}
		}()
	}
	werrc := make(chan error, 1)
	go func() {
		var werr error
		for b := range full {
			if werr == nil {
				if _, err := w.Write(b); err != nil {
					werr = fmt.Errorf("store %s: %w", what, err)
				}
			}
			written <- b // the tee needs the length; the reader re-slices
		}
		if tee != nil {
			close(written)
		}
		werrc <- werr
	}()

	var rerr error
	left := size
	for left > 0 {
		if err := ctx.Err(); err != nil {
			rerr = context.Cause(ctx)
			break
		}
		b := <-free
		b = b[:min(uint64(cap(b)), left)]
		if _, err := io.ReadFull(src, b); err != nil {
			free <- b
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("it has fewer than the %d bytes it had when listed (changed while importing)", size)
			}
			rerr = fmt.Errorf("read %s: %w", what, err)
			break
		}
		full <- b
		left -= uint64(len(b))
	}
	close(full)
	werr := <-werrc
	if teeDone != nil {
		<-teeDone
	}
	if rerr != nil {
		return storeclient.Digest{}, rerr
	}
	if werr != nil {
		return storeclient.Digest{}, werr
	}
	if teeErr != nil {
		return storeclient.Digest{}, teeErr
	}
	d, err := w.Commit()
	if err != nil {
		return storeclient.Digest{}, fmt.Errorf("store %s: %w", what, err)
	}
	return d, nil
}

// emptyBlob stores the empty blob once per import; empty files refer to it.
type emptyBlob struct{ stored bool }

func (e *emptyBlob) ensure(ctx context.Context, store storeclient.BlobService) error {
	if e.stored {
		return nil
	}
	if err := putBlob(ctx, store, nil, storeclient.EmptyDigest); err != nil {
		return err
	}
	e.stored = true
	return nil
}

func quote(s string) string { return strconv.Quote(s) }

// acquire takes size bytes of the read-ahead budget. If it has to wait, it
// first sends the pending batch, whose jobs may be what frees the memory.
func acquire(ctx context.Context, budget *semaphore.Weighted, size uint64, jobs *batcher) error {
	if budget.TryAcquire(int64(size)) {
		return nil
	}
	if err := jobs.flush(ctx); err != nil {
		return err
	}
	if err := budget.Acquire(ctx, int64(size)); err != nil {
		return context.Cause(ctx)
	}
	return nil
}

package importer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// hashingReader feeds everything read through it into a hash and counts it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n uint64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += uint64(n)
	return n, err
}

// ImportNAR imports the NAR file read from r, plain or compressed with
// xz, zstd or bzip2 (recognised by its magic bytes, see
// nar.DetectCompression), as ImportPlainNAR imports the NAR inside. A
// file the decompressor cannot decode is an error wrapping
// storeclient.ErrCorrupt.
func ImportNAR(ctx context.Context, store storeclient.Store, r io.Reader, name string) (*storeclient.PathInfo, error) {
	if err := checkNARName(name); err != nil {
		return nil, err
	}
	c, r, err := nar.DetectCompression(r)
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	d, err := nar.Decompress(r, c)
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	defer d.Close()
	info, err := importNAR(ctx, store, d, name)
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	return info, nil
}

// ImportPlainNAR imports the NAR read from r, which it does not
// decompress, under the store path name name, and returns the PathInfo of
// the path `nix-store --add` gives the unpacked tree. The NAR must be
// canonical (the Reader of package nar is strict), so its sha256,
// computed over the stream as it is read, is the unpacked tree's NAR hash.
// A malformed NAR is an error wrapping nar.ErrMalformed; nothing of it is
// made reachable by a PathInfo. A caller that knows the compression of a
// NAR file (a narinfo's) decompresses it with nar.Decompress.
//
// The calling goroutine parses and hashes the NAR and never waits for a
// blob to be stored while it has memory budget left: small files go to
// the workers in batches, each big file to a writer goroutine of its own
// (BLAKE3 and write, chunk by chunk), and a sequencer goroutine assembles
// the Directories, waiting there for the files' digests. So the end of a
// directory, or a big file the disk is slow to take, does not stop the
// parsing of what follows.
func ImportPlainNAR(ctx context.Context, store storeclient.Store, r io.Reader, name string) (*storeclient.PathInfo, error) {
	if err := checkNARName(name); err != nil {
		return nil, err
	}
	info, err := importNAR(ctx, store, r, name)
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	return info, nil
}

// checkNARName checks that name can name a store path, before anything is
// read or stored.
func checkNARName(name string) error {
	if _, err := storeclient.NewStorePath(storeclient.StorePathDigest{}, name); err != nil {
		return fmt.Errorf("import NAR: %w", err)
	}
	return nil
}

// importNAR is ImportPlainNAR after the name is checked; its errors lack
// the name.
func importNAR(ctx context.Context, store storeclient.Store, r io.Reader, name string) (*storeclient.PathInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	par := runtime.GOMAXPROCS(0)
	ni := &narImport{
		store:    store,
		budget:   semaphore.NewWeighted(readAheadBytes),
		jobs:     newBatcher(par),
		events:   make(chan narEvent, eventQueue),
		bigSlots: make(chan struct{}, par),
	}
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() { runBatches(ctx, ni.jobs.out, func(j *fileJob) error { return ni.store1(ctx, j) }) })
	}
	b := &treeBuilder{up: newDirUploader(store)}
	seqDone := make(chan error, 1)
	go func() {
		err := ni.sequence(ctx, b)
		if err != nil {
			cancel(err)
		}
		seqDone <- err
	}()

	hr := &hashingReader{r: r, h: sha256.New()}
	err := ni.parse(ctx, hr)
	if err == nil {
		err = ni.jobs.flush(ctx) // the sequencer waits for the last batch
	}
	close(ni.events)
	if err != nil {
		cancel(err)
	}
	if serr := <-seqDone; err == nil {
		err = serr
	}
	var info *storeclient.PathInfo
	if err == nil {
		var sum [sha256.Size]byte
		hr.h.Sum(sum[:0])
		info, err = finish(ctx, store, b, name, hr.n, sum)
	}
	if err != nil {
		cancel(err)
	}
	ni.jobs.close()
	ni.bigWG.Wait()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return info, nil
}

// narImport is the state of one ImportNAR.
type narImport struct {
	store  storeclient.Store
	budget *semaphore.Weighted
	jobs   *batcher // owned by the parser
	events chan narEvent
	pool   bufPool
	empty  emptyBlob
	// bigSlots bounds the big files being written at once; bigWG waits
	// for their writers.
	bigSlots chan struct{}
	bigWG    sync.WaitGroup
}

// narEvent is one node of the NAR, in order, from the parser to the
// sequencer: a directory's start or end, or an entry whose node is known
// (node) or will be when its blob is stored (job).
type narEvent struct {
	kind eventKind
	name string
	node storeclient.Node
	job  *fileJob
}

// store1 hashes and stores the blob of one small file, and frees its
// contents.
func (ni *narImport) store1(ctx context.Context, j *fileJob) error {
	j.digest = storeclient.HashBytes(j.data)
	err := putBlob(ctx, ni.store, j.data, j.digest)
	ni.pool.put(j.data)
	j.data = nil
	ni.budget.Release(int64(j.size))
	return err
}

// send hands ev to the sequencer. Before it waits for room, it sends the
// pending batch of jobs, which the sequencer may be waiting for.
func (ni *narImport) send(ctx context.Context, ev narEvent) error {
	select {
	case ni.events <- ev:
		return nil
	default:
	}
	if err := ni.jobs.flush(ctx); err != nil {
		return err
	}
	select {
	case ni.events <- ev:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// sequence assembles the tree from the parser's events: it waits for the
// files of each directory at its end, and stores the Directories leaves
// first.
func (ni *narImport) sequence(ctx context.Context, b *treeBuilder) error {
	for ev := range ni.events {
		var err error
		switch {
		case ev.kind == evDirectory:
			b.beginDir(ev.name)
		case ev.kind == evEnd:
			err = b.endDir(ctx)
		case ev.job != nil:
			err = b.addPending(ev.name, ev.job)
		default:
			err = b.add(ev.name, ev.node)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parse reads the NAR and hands its nodes to the sequencer.
func (ni *narImport) parse(ctx context.Context, hr *hashingReader) error {
	nr := nar.NewReader(hr)
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		h, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch h.Type {
		case nar.TypeDirectory:
			err = ni.send(ctx, narEvent{kind: evDirectory, name: h.Name})
		case nar.TypeEndDirectory:
			err = ni.send(ctx, narEvent{kind: evEnd})
		case nar.TypeSymlink:
			var t storeclient.SymlinkTarget
			if t, err = storeclient.NewSymlinkTarget(h.Target); err == nil {
				err = ni.send(ctx, narEvent{kind: evSymlink, name: h.Name, node: storeclient.SymlinkNode(t)})
			}
		case nar.TypeRegular:
			err = ni.file(ctx, nr, h)
		}
		if err != nil {
			return err
		}
	}
}

func (ni *narImport) file(ctx context.Context, nr *nar.Reader, h *nar.Header) error {
	ev := narEvent{kind: evFile, name: h.Name}
	switch {
	case h.Size == 0:
		if err := ni.empty.ensure(ctx, ni.store); err != nil {
			return err
		}
		ev.node = storeclient.FileNode(storeclient.EmptyDigest, 0, h.Executable)
	case h.Size <= smallFileMax:
		if err := acquire(ctx, ni.budget, h.Size, ni.jobs); err != nil {
			return err
		}
		data := ni.pool.get(int(h.Size))
		if _, err := io.ReadFull(nr, data); err != nil {
			ni.pool.put(data)
			ni.budget.Release(int64(h.Size))
			return err
		}
		ev.job = &fileJob{size: h.Size, executable: h.Executable, data: data}
		if err := ni.jobs.add(ctx, ev.job); err != nil {
			return err // canceled: the batch was not sent
		}
	default:
		j, err := ni.bigFile(ctx, nr, h)
		if err != nil {
			return err
		}
		ev.job = j
	}
	return ni.send(ctx, ev)
}

// bigFile reads a file too big for a worker in chunks, taken from the
// memory budget, and hands them to a writer goroutine of its own, which
// stores the blob; the returned job is done when it is stored.
func (ni *narImport) bigFile(ctx context.Context, nr *nar.Reader, h *nar.Header) (*fileJob, error) {
	// The workers store the pending small files meanwhile.
	if err := ni.jobs.flush(ctx); err != nil {
		return nil, err
	}
	select {
	case ni.bigSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	what := "file " + quote(h.Name)
	w, err := ni.store.NewBlobWriter(ctx)
	if err != nil {
		<-ni.bigSlots
		return nil, fmt.Errorf("store %s: %w", what, err)
	}
	j := &fileJob{size: h.Size, executable: h.Executable, done: make(chan struct{})}
	// The budget bounds the chunks in flight; the queue never blocks.
	chunks := make(chan []byte, readAheadBytes/streamChunk+1)
	ni.bigWG.Go(func() { ni.writeBig(w, chunks, j, what) })
	defer close(chunks)
	for left := h.Size; left > 0; {
		n := min(left, streamChunk)
		if err := acquire(ctx, ni.budget, n, ni.jobs); err != nil {
			return nil, err
		}
		b := ni.pool.get(int(n))
		if _, err := io.ReadFull(nr, b); err != nil {
			ni.pool.put(b)
			ni.budget.Release(int64(n))
			return nil, err
		}
		chunks <- b
		left -= n
	}
	return j, nil
}

// writeBig writes the chunks of one big file to w and commits the blob if
// all of its bytes came, then finishes j.
func (ni *narImport) writeBig(w storeclient.BlobWriter, chunks <-chan []byte, j *fileJob, what string) {
	var err error
	var n uint64
	for b := range chunks {
		if err == nil {
			if _, werr := w.Write(b); werr != nil {
				err = fmt.Errorf("store %s: %w", what, werr)
			}
		}
		n += uint64(len(b))
		ni.pool.put(b)
		ni.budget.Release(int64(len(b)))
	}
	if err == nil && n != j.size {
		// The parser failed inside the file and reports why.
		err = fmt.Errorf("store %s: only %d of its %d bytes were read", what, n, j.size)
	}
	if err == nil {
		if j.digest, err = w.Commit(); err != nil {
			err = fmt.Errorf("store %s: %w", what, err)
		}
	}
	w.Close()
	j.err = err
	close(j.done)
	<-ni.bigSlots
}

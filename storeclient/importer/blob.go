package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/storefs/storefs/storeclient"
)

// fileJob is one small file handed to a worker: the worker stores its
// blob (and, for ImportPath, reads it first) and closes done.
type fileJob struct {
	path       string // ImportPath: the file to read
	size       uint64
	executable bool
	data       []byte // contents; for ImportPath filled by the worker
	digest     storeclient.Digest
	err        error
	done       chan struct{}
}

func newFileJob(path string, size uint64, executable bool) *fileJob {
	return &fileJob{path: path, size: size, executable: executable, done: make(chan struct{})}
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
// streamBuffers how many of them are in flight between the reader and the
// blob writer.
const (
	streamChunk   = 1 << 20
	streamBuffers = 4
)

// streamBlob copies exactly size bytes from src into a new blob and returns
// its digest (computed by the store's writer while it writes). Each chunk
// is also written to tee (the NAR hash) by the calling goroutine while
// another goroutine writes it to the store, so hashing and storing overlap.
// what names the source in errors.
func streamBlob(ctx context.Context, store storeclient.BlobService, src io.Reader, size uint64, tee io.Writer, what string) (storeclient.Digest, error) {
	w, err := store.NewBlobWriter(ctx)
	if err != nil {
		return storeclient.Digest{}, fmt.Errorf("store %s: %w", what, err)
	}
	defer w.Close()

	free := make(chan []byte, streamBuffers)
	for range streamBuffers {
		free <- make([]byte, streamChunk)
	}
	full := make(chan []byte, streamBuffers)
	werrc := make(chan error, 1)
	go func() {
		var werr error
		for b := range full {
			if werr == nil {
				if _, err := w.Write(b); err != nil {
					werr = fmt.Errorf("store %s: %w", what, err)
				}
			}
			free <- b[:cap(b)]
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
		b = b[:min(uint64(len(b)), left)]
		if _, err := io.ReadFull(src, b); err != nil {
			free <- b
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("it has fewer than the %d bytes it had when listed (changed while importing)", size)
			}
			rerr = fmt.Errorf("read %s: %w", what, err)
			break
		}
		full <- b
		if tee != nil {
			if _, err := tee.Write(b); err != nil {
				rerr = err
				break
			}
		}
		left -= uint64(len(b))
	}
	close(full)
	werr := <-werrc
	if rerr != nil {
		return storeclient.Digest{}, rerr
	}
	if werr != nil {
		return storeclient.Digest{}, werr
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

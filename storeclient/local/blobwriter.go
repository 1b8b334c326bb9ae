package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zeebo/blake3"

	"github.com/storefs/storefs/storeclient"
)

// writeBufferSize batches the many small writes of an import into fewer
// system calls.
const writeBufferSize = 128 << 10

// NewBlobWriter implements storeclient.BlobService. The blob is written to
// a temporary file in DIR/tmp and hashed while it is written; Commit
// renames it to its digest's name. Commit does not fsync: the blobs are made
// durable together, by one syncfs(2) before the next Directory or PathInfo
// that may refer to them is written (see Store.syncBlobs).
func (s *Store) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	if err := s.usable(ctx, true); err != nil {
		return nil, fmt.Errorf("new blob writer: %w", err)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "blob-*")
	if err != nil {
		return nil, fmt.Errorf("new blob writer: %w", err)
	}
	buf := s.writeBufs.Get().(*bufio.Writer)
	buf.Reset(f)
	return &blobWriter{s: s, ctx: ctx, f: f, buf: buf, h: storeclient.NewHasher()}, nil
}

type blobWriter struct {
	s    *Store
	ctx  context.Context
	f    *os.File
	buf  *bufio.Writer
	h    *blake3.Hasher
	size int64 // bytes written so far
	// kicked is how far writeback of the file has been started.
	kicked int64
	// big takes over once the blob is larger than directThreshold; nil
	// before.
	big *bigWriter
	// ob computes the blob's bao outboard once the blob is larger than
	// outboardThreshold; nil before (and if it could not start).
	ob   *treeHasher
	done bool
}

// writebackStep is how many bytes of a big blob are written before its
// writeback to disk is started, so that the disk works while the import
// goes on instead of all at once in the syncfs before the metadata.
const writebackStep = 8 << 20

var errWriterDone = errors.New("blob writer is already committed or closed")

func (w *blobWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriterDone
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("write blob: %w", err)
	}
	if w.size <= outboardThreshold && w.size+int64(len(p)) > outboardThreshold {
		if err := w.startOutboard(); err != nil {
			return 0, fmt.Errorf("write blob %s: %w", w.f.Name(), err)
		}
	}
	if w.big == nil && w.size+int64(len(p)) > directThreshold {
		if err := w.startBig(); err != nil {
			return 0, fmt.Errorf("write blob %s: %w", w.f.Name(), err)
		}
	}
	if w.big != nil {
		w.h.Write(p)
		if w.ob != nil {
			w.ob.Write(p)
		}
		w.size += int64(len(p))
		if err := w.big.write(p); err != nil {
			return 0, fmt.Errorf("write blob %s: %w", w.f.Name(), err)
		}
		return len(p), nil
	}
	n, err := w.buf.Write(p)
	w.h.Write(p[:n])
	if w.ob != nil {
		w.ob.Write(p[:n])
	}
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write blob %s: %w", w.f.Name(), err)
	}
	if !w.s.noSync {
		// What the buffer holds is not in the file yet.
		if end := w.size - int64(w.buf.Buffered()); end-w.kicked >= writebackStep {
			startWriteback(w.f, w.kicked, end-w.kicked)
			w.kicked = end
		}
	}
	return n, nil
}

// startBig hands the rest of the blob to a bigWriter: what the buffer
// holds goes to the file first, so that the file is complete up to
// w.size.
func (w *blobWriter) startBig() error {
	if err := w.buf.Flush(); err != nil {
		return err
	}
	w.releaseBuffer()
	w.big = newBigWriter(w.s, w.f, w.size, !w.s.noSync && !w.s.cachedWrites)
	return nil
}

// startOutboard starts computing the blob's outboard, which the store
// keeps for a blob of its size (see Outboards): the bytes written so far,
// at most outboardThreshold, are read back from the file, where they were
// written through the page cache; the rest is hashed as it comes, on the
// caller's goroutine next to the digest, while the bigWriter's goroutine
// writes. A read error only leaves the blob without a kept outboard; an
// error flushing the buffer is the blob's.
func (w *blobWriter) startOutboard() error {
	if err := w.buf.Flush(); err != nil {
		return err
	}
	h := newTreeHasher()
	if _, err := io.Copy(h, io.NewSectionReader(w.f, 0, w.size)); err != nil {
		w.s.log.Debug("cannot read back a blob being written; its outboard is computed when asked for", "store", w.s.dir, "file", w.f.Name(), "err", err)
		return nil
	}
	w.ob = h
	return nil
}

// Commit moves the blob to its final name, or drops the temporary file if
// a blob of that digest and length is already there.
func (w *blobWriter) Commit() (storeclient.Digest, error) {
	if w.done {
		return storeclient.Digest{}, errWriterDone
	}
	w.done = true
	d := storeclient.Digest(w.h.Sum(nil))
	err := w.commit(d)
	w.releaseBuffer()
	if err != nil {
		os.Remove(w.f.Name())
		return storeclient.Digest{}, fmt.Errorf("commit blob %s: %w", d, err)
	}
	if w.ob != nil {
		w.s.keepOutboard(d, w.ob)
		w.ob = nil
	}
	return d, nil
}

func (w *blobWriter) commit(d storeclient.Digest) error {
	tmp := w.f.Name()
	var err error
	if w.big != nil {
		err = w.big.finish()
	} else {
		err = w.buf.Flush()
	}
	if err == nil {
		err = w.f.Chmod(0o444) // through the descriptor, before the name is public
	}
	size := w.size
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := w.s.usable(w.ctx, true); err != nil {
		return err
	}
	final := w.s.blobPath(d)
	// Whether this blob is new or a copy another writer has just renamed
	// into place, it may not be on disk yet: the next metadata write syncs.
	defer w.s.blobWritten()
	if fi, err := os.Stat(final); err == nil && fi.Size() == size && !w.s.quar.fileBad(d, idOf(fi)) {
		// Already stored: dedup. (A file of the wrong length, or a
		// quarantined one, is a corrupt copy; it is replaced below.)
		return os.Remove(tmp)
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	w.s.repairedFile(d)
	return nil
}

// Close discards an uncommitted blob; after Commit it does nothing.
func (w *blobWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	w.releaseBuffer()
	if w.big != nil {
		w.big.finish()
	}
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("discard blob %s: %w", w.f.Name(), err)
	}
	return nil
}

// releaseBuffer gives the writer's buffer back to the store's pool, so an
// import of many small blobs does not allocate one buffer per blob.
func (w *blobWriter) releaseBuffer() {
	if w.buf == nil {
		return
	}
	w.buf.Reset(nil)
	w.s.writeBufs.Put(w.buf)
	w.buf = nil
}

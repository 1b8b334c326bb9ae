package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// File is an open regular file. ReadAt may be called concurrently; reads of
// one blob through many Files proceed in parallel. Close it when done.
type File struct {
	node Node
	size int64
	src  blobSource // nil for the empty file
	op   string
	fs   *FS // the view it was opened through, for its Observer
}

// Open opens a regular file for reading. A directory (or the root) is EISDIR,
// a symlink ELOOP (callers follow links first). The bytes a File serves are
// verified against the blob's digest before they leave it, unless the store
// is trusted local data (storeclient.IsTrustedLocal): per chunk group
// through the blob's bao outboard when the store has one, or else by
// fetching the blob once, whole, into the spool and hashing it (see
// docs/filesystem.md, "Integrity"). A missing blob, corrupt content or a
// backend that does not answer in time is EIO, logged with the digest.
func (f *FS) Open(ctx context.Context, n Node) (*File, error) {
	t0 := f.opStart(OpOpen)
	fl, err := f.open(ctx, n)
	f.opEnd(OpOpen, t0, 0, err)
	return fl, err
}

func (f *FS) open(ctx context.Context, n Node) (*File, error) {
	switch {
	case n.place == placeInvalid:
		return nil, newError("open", "", syscall.EINVAL, errors.New("invalid node"))
	case n.IsDir():
		return nil, newError("open", "", syscall.EISDIR, nil)
	case n.node.Kind() == storeclient.KindSymlink:
		return nil, newError("open", "", syscall.ELOOP, errors.New("a symlink"))
	}
	d, size := n.node.Digest(), n.node.Size()
	if size > 1<<63-1 {
		return nil, f.corrupt("open", d, fmt.Errorf("recorded size %d is too large", size))
	}
	fl := &File{node: n, size: int64(size), op: "read " + d.String(), fs: f}
	if size == 0 {
		if d != storeclient.EmptyDigest {
			return nil, f.corrupt("open", d, errors.New("recorded size 0 but the digest is not the empty blob's"))
		}
		return fl, nil
	}
	src, err := f.openSource(ctx, d, int64(size))
	if err != nil {
		return nil, err
	}
	fl.src = src
	return fl, nil
}

// Node returns the node the file was opened from.
func (fl *File) Node() Node { return fl.node }

// Size returns the file's length.
func (fl *File) Size() int64 { return fl.size }

// BlobFile returns the local file holding the file's blob and the offset of
// the blob's first byte in it, for frontends that hand a file range to the
// kernel (FUSE passthrough and splice, sendfile for NFS READ and 9P Rread).
// ok is true only for bytes that need no further check: a blob of a
// trusted-local store held whole by a file (not for a file shorter than the
// blob's end, damaged on disk: ReadAt answers that with EIO, where the
// kernel would stop short in the middle of a reply), or a remote blob
// verified whole into the spool. Reads of the file skip ReadAt and its
// Observer. The file stays owned by fl: do not close it, or use it after
// fl.Close.
func (fl *File) BlobFile() (f *os.File, off int64, ok bool) {
	if fl.src == nil {
		return nil, 0, false
	}
	return fl.src.file(fl.size)
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt: fewer bytes only at the
// end of the file, with io.EOF; a read at or past the end returns 0, io.EOF.
// A negative offset is EINVAL; a backend failure, corrupt content or a
// timeout EIO.
func (fl *File) ReadAt(p []byte, off int64) (int, error) {
	t0 := fl.fs.opStart(OpRead)
	n, err := fl.readAt(p, off)
	if errors.Is(err, io.EOF) {
		fl.fs.opEnd(OpRead, t0, n, nil)
	} else {
		fl.fs.opEnd(OpRead, t0, n, err)
	}
	return n, err
}

func (fl *File) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, newError(fl.op, "", syscall.EINVAL, errors.New("negative offset"))
	}
	if off >= fl.size {
		return 0, io.EOF
	}
	var eof error
	if rem := fl.size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	if len(p) == 0 {
		return 0, eof
	}
	n, err := fl.src.readAt(p, off)
	if n == len(p) { // io.ReaderAt may say io.EOF with the last bytes
		return n, eof
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("blob ended at %d of %d bytes: %w", off+int64(n), fl.size, storeclient.ErrCorrupt)
	}
	return 0, backendError(fl.op, "", err)
}

// Close releases the file. It waits for reads still running in the backend.
func (fl *File) Close() error {
	t0 := fl.fs.opStart(OpClose)
	var err error
	if fl.src != nil {
		err = fl.src.close()
	}
	fl.fs.opEnd(OpClose, t0, 0, err)
	return err
}

// readStore reads from a store's blob reader, a panic in it becoming an
// error (see storeCall).
func (f *fsState) readStore(r storeclient.BlobReader, p []byte, off int64) (n int, err error) {
	defer f.recoverStore("read_blob", &err)
	return r.ReadAt(p, off)
}

// closeStore closes a store's blob reader, a panic in it becoming an
// error (see storeCall).
func (f *fsState) closeStore(r storeclient.BlobReader) (err error) {
	defer f.recoverStore("close_blob", &err)
	return r.Close()
}

// boundedReader bounds each ReadAt of an untrusted backend by a timeout.
// The backend's ReadAt has no context, so it runs in a goroutine reading
// into its own buffer; the goroutine belongs to the reader, and Close waits
// for it after closing the backend reader (which must unblock its reads).
type boundedReader struct {
	r       storeclient.BlobReader
	timeout time.Duration
	wg      sync.WaitGroup
}

type readResult struct {
	n   int
	err error
}

func (b *boundedReader) Size() int64 { return b.r.Size() }

func (b *boundedReader) ReadAt(p []byte, off int64) (int, error) {
	buf := make([]byte, len(p))
	done := make(chan readResult, 1)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		var res readResult
		defer func() {
			if p := recover(); p != nil { // this goroutine's panic would end the process
				res = readResult{0, fmt.Errorf("store panicked in a blob read: %v\n%s", p, debug.Stack())}
			}
			done <- res
		}()
		res.n, res.err = b.r.ReadAt(buf, off)
	}()
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case res := <-done:
		copy(p, buf[:res.n])
		return res.n, res.err
	case <-t.C:
		return 0, fmt.Errorf("blob read at %d: %w", off, context.DeadlineExceeded)
	}
}

func (b *boundedReader) Close() error {
	err := b.r.Close()
	b.wg.Wait()
	return err
}

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
	r    storeclient.BlobReader // nil for the empty file
	op   string
	fs   *FS // the view it was opened through, for its Observer
}

// Open opens a regular file for reading. A directory (or the root) is EISDIR,
// a symlink ELOOP (callers follow links first). A missing blob is EIO. For a
// store that is not trusted-local the whole blob is hashed before Open
// returns, unless its digest was verified recently (verify-then-serve):
// corrupt content is EIO and logged once with the digest, never served.
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
	if size == 0 {
		if d != storeclient.EmptyDigest {
			return nil, f.corrupt("open", d, errors.New("recorded size 0 but the digest is not the empty blob's"))
		}
		return &File{node: n, op: "read " + d.String(), fs: f}, nil
	}
	r, err := f.openBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	if r.Size() != int64(size) {
		f.closeStore(r)
		return nil, f.corrupt("open", d, fmt.Errorf("blob has %d bytes, the node records %d", r.Size(), size))
	}
	if !f.trusted {
		if err := f.verifyBlob(ctx, d); err != nil {
			f.closeStore(r)
			return nil, err
		}
	}
	return &File{node: n, size: int64(size), r: r, op: "read " + d.String(), fs: f}, nil
}

// openBlob opens blob d in the store, bounded by the timeout; an
// untrusted store's reader also gets every ReadAt bounded.
func (f *FS) openBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	octx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	tb := f.backendStart()
	br, err := storeCall(f.fsState, BackendOpenBlob, func() (storeclient.BlobReader, error) { return f.store.OpenBlob(octx, d) })
	f.backendEnd(BackendOpenBlob, tb, err)
	cancel()
	if err != nil {
		if errors.Is(err, storeclient.ErrCorrupt) {
			f.log.Error("vfs: corrupt blob", "digest", d.String(), "err", err)
		}
		return nil, backendError("open", d.String(), err)
	}
	if f.trusted {
		return br, nil
	}
	return &boundedReader{r: br, timeout: f.opts.Timeout}, nil
}

// corrupt logs one line for corrupt content and returns its EIO error.
func (f *FS) corrupt(op string, d storeclient.Digest, cause error) error {
	f.log.Error("vfs: corrupt blob", "digest", d.String(), "err", cause)
	return backendError(op, d.String(), fmt.Errorf("%w: %w", storeclient.ErrCorrupt, cause))
}

// verifyChunk is how much of a blob one verification read asks for.
const verifyChunk = 1 << 20

// verifyBlob hashes the whole blob d (unless it was verified before) and
// fails with EIO if it does not hash to d. Concurrent opens of one blob share
// one verification, which reads through a reader of its own: it runs
// detached from the callers (see shared), so it must not use a reader that
// a caller who gave up closes.
func (f *FS) verifyBlob(ctx context.Context, d storeclient.Digest) error {
	hit := f.verified.Contains(d)
	f.cacheLookup(CacheVerifiedBlob, hit)
	if hit {
		return nil
	}
	_, err := shared(ctx, &f.blobFlight, string(d[:]), func(ctx context.Context) (any, error) {
		return nil, f.hashBlob(ctx, d)
	})
	var ve *Error
	if err != nil && !errors.As(err, &ve) {
		err = backendError("open", d.String(), err) // this caller gave up
	}
	return err
}

// hashBlob reads blob d through a reader of its own and checks that it
// hashes to d, remembering it as verified if it does.
func (f *FS) hashBlob(ctx context.Context, d storeclient.Digest) error {
	r, err := f.openBlob(ctx, d)
	if err != nil {
		return err
	}
	defer f.closeStore(r)
	h := storeclient.NewHasher()
	buf := make([]byte, min(verifyChunk, r.Size()))
	for off := int64(0); off < r.Size(); {
		n, err := f.readStore(r, buf[:min(int64(len(buf)), r.Size()-off)], off)
		if n > 0 {
			h.Write(buf[:n])
			off += int64(n)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off == r.Size()) {
			if errors.Is(err, io.EOF) {
				return f.corrupt("open", d, fmt.Errorf("blob ends at %d of %d bytes", off, r.Size()))
			}
			return backendError("open", d.String(), err)
		}
	}
	if got := storeclient.Digest(h.Sum(nil)); got != d {
		return f.corrupt("open", d, fmt.Errorf("content hashes to %s", got))
	}
	f.verified.Add(d, struct{}{})
	return nil
}

// Node returns the node the file was opened from.
func (fl *File) Node() Node { return fl.node }

// Size returns the file's length.
func (fl *File) Size() int64 { return fl.size }

// blobFile is implemented by the readers of stores that keep each blob as
// the range [FileOffset(), FileOffset()+Size()) of a local file (the
// embedded store: a blob file of its own at offset 0, or a range of a
// pack). The file belongs to the reader.
type blobFile interface {
	File() *os.File
	FileOffset() int64
}

// BlobFile returns the local file holding the file's blob and the offset of
// the blob's first byte in it, for frontends that hand a file range to the
// kernel (FUSE passthrough and splice, sendfile for NFS READ and 9P Rread).
// ok is false for the empty file, for a store that is not trusted-local
// (its bytes must go through ReadAt's checks), for a reader without a file,
// and for a file shorter than the blob's end (damaged on disk): ReadAt
// answers that with EIO, where the kernel would stop short in the middle of
// a reply. Reads of the file skip ReadAt's checks and its Observer. The
// file stays owned by fl: do not close it, or use it after fl.Close.
func (fl *File) BlobFile() (f *os.File, off int64, ok bool) {
	if fl.r == nil || !fl.fs.trusted {
		return nil, 0, false
	}
	bf, isFile := fl.r.(blobFile)
	if !isFile || bf.File() == nil {
		return nil, 0, false
	}
	f, off = bf.File(), bf.FileOffset()
	fi, err := f.Stat()
	if err != nil || fi.Size() < off+fl.size {
		fl.fs.log.Warn("vfs: blob file shorter than its blob; reading it through vfs", "blob", fl.node.node.Digest().String(), "file", f.Name(), "offset", off, "size", fl.size, "err", err)
		return nil, 0, false
	}
	return f, off, true
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt: fewer bytes only at the
// end of the file, with io.EOF; a read at or past the end returns 0, io.EOF.
// A negative offset is EINVAL; a backend failure or timeout EIO.
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
	n, err := fl.fs.readStore(fl.r, p, off)
	if n == len(p) {
		return n, eof
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("blob ended at %d of %d bytes: %w", off+int64(n), fl.size, storeclient.ErrCorrupt)
	}
	return n, backendError(fl.op, "", err)
}

// Close releases the file. It waits for reads still running in the backend.
func (fl *File) Close() error {
	t0 := fl.fs.opStart(OpClose)
	var err error
	if fl.r != nil {
		err = fl.fs.closeStore(fl.r)
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

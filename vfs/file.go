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

// ReadResult is what File.Read returns: Len bytes of the file, either in
// memory (Data) or, when a local file holds them, as the range [Off,
// Off+Len) of that file (File), which a frontend may hand to the kernel
// (splice, sendfile) instead of copying. Either way the bytes are verified:
// a file range is only offered for a trusted store's blob file or a remote
// blob verified whole into the spool. File belongs to the vfs.File it came
// from: do not close it, or use it after that File's Close.
type ReadResult struct {
	Data []byte
	File *os.File
	Off  int64
	Len  int
}

// Bytes returns the result's bytes: Data, or the file range read into buf
// (which must have room for Len bytes). A file that ends early is EIO.
func (r ReadResult) Bytes(buf []byte) ([]byte, error) {
	if r.File == nil {
		return r.Data, nil
	}
	n, err := r.File.ReadAt(buf[:r.Len], r.Off)
	if n == r.Len {
		return buf[:n], nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s ended at %d: %w", r.File.Name(), r.Off+int64(n), storeclient.ErrCorrupt)
	}
	return nil, backendError("read", "", err)
}

// Read reads up to len(buf) bytes at off: fewer only at the end of the
// file, none at or past it. When a local file holds the bytes (see
// ReadResult) the result names its range and buf is not touched;
// otherwise the bytes are read into buf. Every byte is reported to the
// Observer of the view fl was opened through, whichever way it is served.
// A negative offset is EINVAL; a backend failure, corrupt content or a
// timeout EIO.
func (fl *File) Read(buf []byte, off int64) (ReadResult, error) {
	t0 := fl.fs.opStart(OpRead)
	res, err := fl.read(buf, off)
	fl.fs.opEnd(OpRead, t0, res.Len, err)
	return res, err
}

func (fl *File) read(buf []byte, off int64) (ReadResult, error) {
	if off < 0 {
		return ReadResult{}, newError(fl.op, "", syscall.EINVAL, errors.New("negative offset"))
	}
	if off >= fl.size || len(buf) == 0 {
		return ReadResult{}, nil
	}
	n := int(min(int64(len(buf)), fl.size-off))
	if f, base, ok := fl.src.file(); ok {
		return ReadResult{File: f, Off: base + off, Len: n}, nil
	}
	got, err := fl.readAt(buf[:n], off)
	if err != nil {
		return ReadResult{}, err
	}
	return ReadResult{Data: buf[:got], Len: got}, nil
}

// PassthroughFile returns a local file that holds the whole blob from its
// offset 0, for FUSE passthrough: the kernel then reads it itself, and
// those reads are neither seen nor counted by vfs. ok is false unless the
// blob's bytes need no check (see ReadResult) and sit at the start of a
// file of their own.
func (fl *File) PassthroughFile() (f *os.File, ok bool) {
	if fl.src == nil {
		return nil, false
	}
	f, base, ok := fl.src.file()
	return f, ok && base == 0
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt: fewer bytes only at the
// end of the file, with io.EOF; a read at or past the end returns 0, io.EOF.
// Errors are as for Read.
func (fl *File) ReadAt(p []byte, off int64) (int, error) {
	res, err := fl.Read(p, off)
	if err != nil {
		return 0, err
	}
	b, err := res.Bytes(p)
	if err != nil {
		return 0, err
	}
	if len(b) > 0 && &b[0] != &p[0] {
		copy(p, b)
	}
	if len(b) < len(p) {
		return len(b), io.EOF
	}
	return len(b), nil
}

// readAt fills p, which lies within the file, from the file's source.
func (fl *File) readAt(p []byte, off int64) (int, error) {
	n, err := fl.src.readAt(p, off)
	if n == len(p) { // io.ReaderAt may say io.EOF with the last bytes
		return n, nil
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

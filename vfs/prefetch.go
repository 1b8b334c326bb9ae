package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/storefs/storefs/storeclient"
)

// Prefetching: a frontend that knows which files are about to be read
// (FUSE: the small files of a directory, when the first of them is
// opened) asks vfs to start reading them from the store's disk ahead of
// the reads. Only a trusted local store (storeclient.IsTrustedLocal) is
// read ahead: its bytes need no check, and reading them is cheap. A
// remote store's blobs are fetched, and verified, when they are read.

// The backend calls of prefetching an Observer is told about.
const (
	BackendWillNeed = "will_need" // storeclient.BlobPrefetcher
	BackendBlobFile = "blob_file" // storeclient.BlobFiler
)

// LocalBlobFiles reports whether the store keeps its blobs as trusted data
// in local files (storeclient.IsTrustedLocal and storeclient.BlobFiler:
// the embedded local store). Only then may File.PassthroughFile find a
// blob file to hand to the kernel, and do Prefetch and PrefetchFile read
// anything ahead; a frontend starts its prefetching workers only then.
func (f *FS) LocalBlobFiles() bool {
	_, files := f.store.(storeclient.BlobFiler)
	return f.trusted && files
}

// Prefetch tells vfs that the regular files files are about to be read,
// so that the store starts reading their blobs from disk in the
// background, many at once where it can (storeclient.BlobPrefetcher: the
// local store reads its packed blobs ahead as merged ranges of their
// packs). It returns the files read ahead, whose content ReadPrefetched
// now reads from memory, and the rest, which the caller may pass to
// PrefetchFile one by one (opening a blob file waits for the disk, so from
// many goroutines). Entries that are not non-empty regular files are left
// out of both. A store that is not trusted local data reads nothing
// ahead: both are empty. Errors are as for Open.
func (f *FS) Prefetch(ctx context.Context, files []Node) (ahead, rest []Node, err error) {
	if !f.trusted {
		return nil, nil, nil
	}
	var ds []storeclient.Digest
	for _, n := range files {
		if prefetchable(n) {
			ds = append(ds, n.node.Digest())
		}
	}
	if len(ds) == 0 {
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	left, err := storeCall(f.fsState, BackendWillNeed, func() ([]storeclient.Digest, error) {
		return storeclient.WillNeed(ctx, f.store, ds)
	})
	f.backendEnd(BackendWillNeed, t0, err)
	if err != nil {
		return nil, nil, backendError("prefetch", "", err)
	}
	notAhead := make(map[storeclient.Digest]bool, len(left))
	for _, d := range left {
		notAhead[d] = true
	}
	for _, n := range files {
		switch {
		case !prefetchable(n):
		case notAhead[n.node.Digest()]:
			rest = append(rest, n)
		default:
			ahead = append(ahead, n)
		}
	}
	return ahead, rest, nil
}

// prefetchable reports whether n is a regular file with content.
func prefetchable(n Node) bool {
	return n.place != placeInvalid && !n.IsDir() && n.node.Kind() == storeclient.KindFile && n.node.Size() > 0
}

// PrefetchFile starts reading the blob of the regular file n from disk in
// the background, where the store keeps it as a trusted local file
// (LocalBlobFiles): the kernel is advised to read the file's range into
// its page cache (posix_fadvise WILLNEED; nothing on systems without it).
// It returns at once for other stores and for other nodes. A missing blob
// or a failing store is EIO.
func (f *FS) PrefetchFile(ctx context.Context, n Node) error {
	if !f.LocalBlobFiles() || !prefetchable(n) {
		return nil
	}
	d, size := n.node.Digest(), n.node.Size()
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	type fileRange struct {
		f   *os.File
		off int64
	}
	r, err := storeCall(f.fsState, BackendBlobFile, func() (fileRange, error) {
		fl, off, err := storeclient.BlobFile(ctx, f.store, d)
		return fileRange{fl, off}, err
	})
	f.backendEnd(BackendBlobFile, t0, err)
	if err == nil {
		adviseWillNeed(r.f, r.off, int64(size))
		err = r.f.Close()
	}
	if err != nil {
		return backendError("prefetch "+d.String(), "", err)
	}
	return nil
}

// ReadPrefetched reads the whole content of the regular file n into buf,
// which must have room for it, and returns it: for a frontend that copies
// files into its client's cache before the client asks (FUSE: files
// Prefetch read ahead, stored in the kernel's page cache). Only a trusted
// local store's content is read this way (its bytes need no check); for
// other stores it is ENOTSUP. The read is not reported to the Observer as
// an operation (no client asked for it); its backend calls are. Errors are
// as for Open and Read.
func (f *FS) ReadPrefetched(ctx context.Context, n Node, buf []byte) ([]byte, error) {
	if !prefetchable(n) {
		return nil, newError("prefetch", "", syscall.EINVAL, errors.New("not a regular file with content"))
	}
	d, size := n.node.Digest(), n.node.Size()
	op := "prefetch " + d.String()
	if !f.trusted {
		return nil, newError(op, "", syscall.ENOTSUP, errors.New("the store's content is verified as it is read"))
	}
	if size > uint64(len(buf)) {
		return nil, newError(op, "", syscall.EINVAL, fmt.Errorf("%d bytes do not fit in a buffer of %d", size, len(buf)))
	}
	r, err := f.openBlob(ctx, d, int64(size))
	if err != nil {
		return nil, err
	}
	p := buf[:size]
	got, err := f.readStore(r, p, 0)
	cerr := f.closeStore(r)
	switch {
	case got == len(p) && cerr != nil:
		return nil, backendError(op, "", cerr)
	case got == len(p): // io.ReaderAt may say io.EOF with the last bytes
		return p, nil
	case err == nil || errors.Is(err, io.EOF):
		return nil, f.corrupt(op, d, fmt.Errorf("blob ended at %d of %d bytes", got, size))
	}
	return nil, backendError(op, "", err)
}

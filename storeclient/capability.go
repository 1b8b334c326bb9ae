package storeclient

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// Optional store capabilities. Each is an interface a store may implement
// besides Store, and a function that finds it by type assertion and falls
// back to what every store can do, as io/fs does. Wrapping stores forward
// the capabilities of what they wrap only where that stays true of the
// wrapper.

// TrustedStore is implemented by stores whose data was verified when it
// was written and is kept where nothing but storefs writes it (the
// embedded local store, the memory store): their blobs are served without
// re-hashing.
type TrustedStore interface {
	TrustedLocal() bool
}

// IsTrustedLocal reports whether s implements TrustedStore and reports
// true. Every other store's data is verified before it is served.
func IsTrustedLocal(s BlobService) bool {
	t, ok := s.(TrustedStore)
	return ok && t.TrustedLocal()
}

// OutboardStore is implemented by stores that can give a blob's bao
// outboard (see bao.go for the format), so that a reader can verify any
// range of the blob as it arrives.
type OutboardStore interface {
	// BlobOutboard returns the outboard of blob d, or an error wrapping
	// ErrNoOutboard when there is none, or ErrNotFound when the blob is
	// absent. The outboard is not trusted by the caller: it is checked
	// against d (ParseOutboard) and every range against it.
	BlobOutboard(ctx context.Context, d Digest) ([]byte, error)
}

// BlobOutboard returns s's outboard of blob d, or an error wrapping
// ErrNoOutboard when s does not offer one.
func BlobOutboard(ctx context.Context, s BlobService, d Digest) ([]byte, error) {
	o, ok := s.(OutboardStore)
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNoOutboard)
	}
	return o.BlobOutboard(ctx, d)
}

// SizedBlobOpener is implemented by stores that can open a blob whose size
// the caller already knows (from a verified Directory) without asking the
// server for it first.
type SizedBlobOpener interface {
	// OpenBlobSized opens blob d, which has size bytes. The reader's Size
	// is size; a blob that turns out longer or shorter fails its reads
	// with an error wrapping ErrCorrupt.
	OpenBlobSized(ctx context.Context, d Digest, size int64) (BlobReader, error)
}

// OpenBlobSized opens blob d of size bytes through s's SizedBlobOpener, or
// with OpenBlob, failing with ErrCorrupt when the store's size differs.
func OpenBlobSized(ctx context.Context, s BlobService, d Digest, size int64) (BlobReader, error) {
	if o, ok := s.(SizedBlobOpener); ok {
		return o.OpenBlobSized(ctx, d, size)
	}
	r, err := s.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	if r.Size() != size {
		got := r.Size()
		return nil, errors.Join(fmt.Errorf("blob %s has %d bytes, %d expected: %w", d, got, size, ErrCorrupt), r.Close())
	}
	return r, nil
}

// ContextReaderAt is implemented by BlobReaders whose reads can be
// bounded by a context (the gRPC store's): ReadAtContext is ReadAt that
// gives up, with the context's error, when ctx ends. A caller that must
// bound a read of a reader without it runs the read in a goroutine of its
// own, into a buffer of its own.
type ContextReaderAt interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// How a wrapping store forwards a capability: it embeds what it wraps
// (which passes Store on) and declares, with an explicit method, only the
// capabilities that stay true of the wrapper, each calling the helper
// above on what it wraps, so that it falls back as the helper does. An
// embedded interface value passes on its own method set only, so nothing
// is forwarded by accident. The cache store (storeclient/cache) forwards
// TrustedStore from its fast store, from which it serves everything; it
// does not forward BlobFiler or BlobPrefetcher, which would have to fetch
// a blob from the slow store first. A wrapper that changes what a store
// serves (vfstest.Corrupt) forwards nothing.

// BlobFiler is implemented by stores that keep each blob as a range of a
// local file (the embedded local store: a blob file of its own, or a range
// of a pack), for callers that hand a blob to the kernel or advise it to
// read one ahead. The file's content is trusted only if the store is
// (IsTrustedLocal).
type BlobFiler interface {
	// BlobFile opens the file holding blob d, read-only: the blob is the
	// bytes [off, off+size) of f. The caller closes f. A missing blob
	// wraps ErrNotFound.
	BlobFile(ctx context.Context, d Digest) (f *os.File, off int64, err error)
}

// BlobFile opens s's file holding blob d through its BlobFiler, or
// returns an error wrapping errors.ErrUnsupported when s keeps no blob
// files.
func BlobFile(ctx context.Context, s BlobService, d Digest) (f *os.File, off int64, err error) {
	bf, ok := s.(BlobFiler)
	if !ok {
		return nil, 0, fmt.Errorf("blob file %s: %w", d, errors.ErrUnsupported)
	}
	return bf.BlobFile(ctx, d)
}

// BlobPrefetcher is implemented by stores that can start reading many
// blobs from disk at once, in the background (the local store reads its
// packed blobs ahead as merged ranges of their packs).
type BlobPrefetcher interface {
	// WillNeed tells the store that blobs ds are about to be read and
	// returns those it did not start reading (blobs not packed, or
	// missing), which a caller may read ahead one by one.
	WillNeed(ctx context.Context, ds []Digest) ([]Digest, error)
}

// WillNeed tells s through its BlobPrefetcher that blobs ds are about to
// be read, and returns those it did not start reading: all of ds when s
// has no BlobPrefetcher.
func WillNeed(ctx context.Context, s BlobService, ds []Digest) ([]Digest, error) {
	p, ok := s.(BlobPrefetcher)
	if !ok {
		return ds, nil
	}
	return p.WillNeed(ctx, ds)
}

package storeclient

import (
	"context"
	"io"
	"iter"
)

// BlobReader reads one blob. ReadAt may be called concurrently from many
// goroutines; a read at or past Size returns 0 bytes and io.EOF.
type BlobReader interface {
	io.ReaderAt
	io.Closer
	// Size returns the blob's length in bytes.
	Size() int64
}

// BlobWriter receives the bytes of one new blob. Commit stores it and
// returns its digest; Close without Commit discards it. Close after Commit
// is a no-op.
type BlobWriter interface {
	io.Writer
	Commit() (Digest, error)
	Close() error
}

// BlobService stores blobs by their BLAKE3 digest.
type BlobService interface {
	// StatBlob returns the length of a blob, or an error wrapping
	// ErrNotFound.
	StatBlob(ctx context.Context, d Digest) (int64, error)
	// OpenBlob opens a blob for reading, or returns an error wrapping
	// ErrNotFound.
	OpenBlob(ctx context.Context, d Digest) (BlobReader, error)
	// NewBlobWriter starts writing a new blob.
	NewBlobWriter(ctx context.Context) (BlobWriter, error)
}

// DirectoryService stores Directories by the digest of their canonical
// encoding.
type DirectoryService interface {
	// GetDirectory returns a Directory, verified against d, or an error
	// wrapping ErrNotFound.
	GetDirectory(ctx context.Context, d Digest) (*Directory, error)
	// PutDirectory stores dir and returns its digest. Every child Directory
	// it names must already be stored, with the size dir records for it
	// (Directories are uploaded leaves first).
	PutDirectory(ctx context.Context, dir *Directory) (Digest, error)
}

// PathInfoService stores PathInfos by their store path digest.
type PathInfoService interface {
	// GetPathInfo returns the PathInfo of the store path with digest d, or
	// an error wrapping ErrNotFound.
	GetPathInfo(ctx context.Context, d StorePathDigest) (*PathInfo, error)
	// PutPathInfo stores p, replacing any PathInfo with the same digest.
	// The content p.Node refers to must already be stored.
	PutPathInfo(ctx context.Context, p *PathInfo) error
	// ListPathInfos yields every PathInfo once, in no particular order.
	// An error ends the sequence.
	ListPathInfos(ctx context.Context) iter.Seq2[*PathInfo, error]
}

// Store is a complete castore: blobs, Directories and PathInfos. Every
// backend implements it.
type Store interface {
	BlobService
	DirectoryService
	PathInfoService
	// Close releases the store's resources.
	Close() error
}

package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/storefs/storefs/storeclient"
)

// blobPath returns where the blob with digest d lives: DIR/blobs/ab/abcd…,
// in one of 256 shard directories made when the store is created (a
// directory per blob prefix would cost a mkdir and its sync for most small
// blobs of an import).
func (s *Store) blobPath(d storeclient.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, blobsDir, h[0:2], h)
}

// StatBlob implements storeclient.BlobService.
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	if err := s.usable(ctx, false); err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", d, err)
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", d, notFound(err))
	}
	return fi.Size(), nil
}

// notFound turns a missing file into storeclient.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return storeclient.ErrNotFound
	}
	return err
}

// OpenBlob implements storeclient.BlobService. The reader it returns is a
// *BlobReader, backed by the blob's file.
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, notFound(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return &BlobReader{f: f, size: fi.Size()}, nil
}

// BlobReader reads a blob of a local store straight from its file. ReadAt
// is safe for concurrent use (it is pread(2)).
type BlobReader struct {
	f    *os.File
	size int64
}

var _ storeclient.BlobReader = (*BlobReader)(nil)

// ReadAt implements io.ReaderAt. A read at or past Size returns 0 bytes
// and io.EOF.
func (r *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read blob %s at negative offset %d", r.f.Name(), off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	return r.f.ReadAt(p, off)
}

// Size returns the blob's length.
func (r *BlobReader) Size() int64 { return r.size }

// File returns the blob's open file, for callers that can hand a file to
// the kernel (splice, FUSE passthrough). It stays owned by the reader: do
// not close it, and do not use it after Close. Its content is immutable.
func (r *BlobReader) File() *os.File { return r.f }

// Close closes the file.
func (r *BlobReader) Close() error { return r.f.Close() }

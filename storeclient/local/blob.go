package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/storefs/storefs/storeclient"
)

// blobPath returns where the blob with digest d lives if it is a file of
// its own: DIR/blobs/ab/abcd…, in one of 256 shard directories made when
// the store is created (a directory per blob prefix would cost a mkdir and
// its sync for most small blobs of an import).
func (s *Store) blobPath(d storeclient.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, blobsDir, h[0:2], h)
}

// Blobs are looked up in this order: a pack location this process knows
// (uncommitted or cached, no system call), the blob's own file (big blobs,
// and every blob of a store written before packs: one open or stat), the
// pack index in meta.db (one read transaction, whose result is cached).

// StatBlob implements storeclient.BlobService.
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	if err := s.usable(ctx, false); err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", d, err)
	}
	size, err := s.blobSize(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return size, nil
}

// blobSize returns the length of the stored blob d, or an error wrapping
// storeclient.ErrNotFound.
func (s *Store) blobSize(ctx context.Context, d storeclient.Digest) (int64, error) {
	if loc, ok := s.cachedLoc(d); ok {
		return loc.size, nil
	}
	fi, err := os.Stat(s.blobPath(d))
	if err == nil {
		return fi.Size(), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	loc, found, err := s.indexLoc(ctx, d)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, storeclient.ErrNotFound
	}
	return loc.size, nil
}

// notFound turns a missing file into storeclient.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return storeclient.ErrNotFound
	}
	return err
}

// OpenBlob implements storeclient.BlobService. The reader it returns is a
// *BlobReader, backed by the blob's file or by its range of a pack file.
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	r, err := s.openBlob(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return r, nil
}

func (s *Store) openBlob(ctx context.Context, d storeclient.Digest) (*BlobReader, error) {
	loc, packed := s.cachedLoc(d)
	if !packed {
		f, err := os.Open(s.blobPath(d))
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, err
			}
			return &BlobReader{f: f, size: fi.Size()}, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		loc, packed, err = s.indexLoc(ctx, d)
		if err != nil {
			return nil, err
		}
		if !packed {
			return nil, storeclient.ErrNotFound
		}
	}
	if err := s.packInFile(loc); err != nil {
		return nil, err
	}
	pf, err := s.acquirePack(loc.pack)
	if err != nil {
		return nil, err
	}
	return &BlobReader{f: pf.f, off: loc.off, size: loc.size, s: s, pack: pf}, nil
}

// BlobReader reads a blob of a local store straight from its file: the
// blob's own file, or its range of a pack file. ReadAt is safe for
// concurrent use (it is pread(2)).
type BlobReader struct {
	f    *os.File
	off  int64 // where the blob starts in f
	size int64
	// s and pack are set for a packed blob: f is the store's shared
	// descriptor of the pack, released by Close.
	s      *Store
	pack   *packFile
	closed atomic.Bool
}

var _ storeclient.BlobReader = (*BlobReader)(nil)

// ReadAt implements io.ReaderAt. A read at or past Size returns 0 bytes
// and io.EOF; a read that reaches the end returns io.EOF with the bytes.
func (r *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read blob %s at negative offset %d", r.f.Name(), off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	if r.pack == nil {
		return r.f.ReadAt(p, off)
	}
	var eof error
	if rem := r.size - off; int64(len(p)) >= rem {
		p, eof = p[:rem], io.EOF
	}
	n, err := r.f.ReadAt(p, r.off+off)
	if err == nil {
		err = eof
	}
	return n, err
}

// Size returns the blob's length.
func (r *BlobReader) Size() int64 { return r.size }

// File returns the file holding the blob, for callers that can hand a file
// to the kernel (splice, FUSE passthrough): the blob's bytes are
// [FileOffset(), FileOffset()+Size()) of it. A packed blob's file is a
// pack, holding other blobs too, so only a FileOffset of 0 means that the
// whole file is the blob. The file stays owned by the reader: do not close
// it, do not move its file offset (use pread-like calls), and do not use it
// after Close. Its content in that range is immutable.
func (r *BlobReader) File() *os.File { return r.f }

// FileOffset returns where the blob starts in File(): 0 for a blob file of
// its own, the offset in the pack for a packed blob (never 0).
func (r *BlobReader) FileOffset() int64 { return r.off }

// Close closes the blob's file, or releases the pack file.
func (r *BlobReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.pack != nil {
		r.s.releasePack(r.pack)
		return nil
	}
	return r.f.Close()
}

package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/storefs/storefs/storeclient"
)

// errNoTmpfile says the store's filesystem cannot make O_TMPFILE files;
// PutSmallBlob then falls back to a blob writer (a named temporary file).
var errNoTmpfile = errors.New("filesystem does not support O_TMPFILE")

// PutSmallBlob stores data as the blob with digest d, unless the store
// already has a blob of that digest and length. d must be the BLAKE3
// digest of data: the caller has hashed it (the importer hashes every file
// once, for its node) and the store does not hash it again; Verify finds a
// blob stored under a wrong digest.
//
// It is meant for contents held in memory whole, such as the small files
// of an import. On Linux the blob is an unnamed O_TMPFILE file, written
// through its descriptor and linked under its final name: no temporary
// name, no rename, nothing left behind by a killed writer, and, on a new
// store, no existence check before the write (an existing blob makes the
// link fail, and is then compared by length). Like BlobWriter.Commit it
// does not fsync: the blob becomes durable with the next metadata write
// (see syncBlobs).
//
// Importers find it by type assertion on the interface
//
//	interface {
//		PutSmallBlob(ctx context.Context, d storeclient.Digest, data []byte) error
//	}
func (s *Store) PutSmallBlob(ctx context.Context, d storeclient.Digest, data []byte) error {
	if err := s.usable(ctx, true); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	final := s.blobPath(d)
	// After a blob that was there already (a re-import), look before
	// writing, so that re-importing stays cheap.
	if s.sawExisting.Load() && s.hasBlob(final, len(data)) {
		s.blobWritten()
		return nil
	}
	if !s.noTmpfile.Load() {
		err := s.tmpfiles.create(filepath.Join(s.dir, tmpDir), final, data)
		switch {
		case err == nil:
			s.sawExisting.Store(false)
			s.blobWritten()
			return nil
		case errors.Is(err, os.ErrExist):
			s.sawExisting.Store(true)
			if s.hasBlob(final, len(data)) {
				// Whether this blob is old or another writer's that has
				// just been linked, it may not be on disk yet.
				s.blobWritten()
				return nil
			}
			// A file of the wrong length is a corrupt copy: the blob
			// writer below replaces it.
		case errors.Is(err, errNoTmpfile):
			s.noTmpfile.Store(true)
		default:
			return fmt.Errorf("put blob %s: %w", d, err)
		}
	}
	return s.putWithWriter(ctx, d, data)
}

// hasBlob reports whether the blob file at path exists with size bytes.
func (s *Store) hasBlob(path string, size int) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() == int64(size)
}

// putWithWriter stores data through a blob writer, which hashes it and
// replaces a stored copy of the wrong length.
func (s *Store) putWithWriter(ctx context.Context, d storeclient.Digest, data []byte) error {
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	got, err := w.Commit()
	if err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	if got != d {
		return fmt.Errorf("put blob: the data hashes to %s, not %s: %w", got, d, storeclient.ErrCorrupt)
	}
	return nil
}

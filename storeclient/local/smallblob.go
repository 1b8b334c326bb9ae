package local

import (
	"context"
	"fmt"
	"os"

	"github.com/storefs/storefs/storeclient"
)

// PutSmallBlob stores data as the blob with digest d, unless the store
// already has a blob of that digest and length. d must be the BLAKE3
// digest of data: the caller has hashed it (the importer hashes every file
// once, for its node) and the store does not hash it again; Verify finds a
// blob stored under a wrong digest.
//
// It is meant for contents held in memory whole, such as the small files
// of an import. The blob is appended to the current pack file (see pack.go):
// blobs put one after the other lie one after the other on disk, and no
// file is created per blob. Concurrent callers append in parallel (each
// reserves its range, then writes it). A blob already stored, packed or
// as a file of its own, is not appended again. Like BlobWriter.Commit it
// does not fsync: the blob becomes durable, and visible to other
// processes, with the next metadata write (or Close); readers of this
// Store find it as soon as PutSmallBlob returns.
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
	stored, err := s.hasPacked(ctx, d, len(data))
	if err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	if stored {
		return nil
	}
	// A blob file of its own (written by a blob writer, or by an older
	// storefs) is kept; one of the wrong length is a corrupt copy, which
	// readers would find before the pack, so the blob writer replaces it;
	// so is a quarantined one.
	if fi, err := os.Stat(s.blobPath(d)); err == nil {
		if fi.Size() == int64(len(data)) && !s.quar.fileBad(d, idOf(fi)) {
			s.blobWritten() // it may not be on disk yet
			return nil
		}
		return s.putWithWriter(ctx, d, data)
	}
	appended, err := s.appendBlob(d, data)
	if err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	if appended {
		s.blobWritten()
		if s.pendingCount() >= packFlushEntries && !s.pw.flushing.Swap(true) {
			defer s.pw.flushing.Store(false)
			if err := s.flushPacks(ctx); err != nil {
				return fmt.Errorf("put blob %s: %w", d, err)
			}
		}
	}
	return nil
}

// hasPacked reports whether d is packed with size bytes, by this writer
// or in the committed index, and not quarantined there. The index is read
// only for digests whose first bytes some packed blob shares.
func (s *Store) hasPacked(ctx context.Context, d storeclient.Digest, size int) (bool, error) {
	if loc, ok := s.cachedLoc(d); ok {
		return loc.size == int64(size) && !s.packedQuarantined(d, loc), nil
	}
	if err := s.loadKnown(ctx); err != nil {
		return false, err
	}
	s.pw.mu.Lock()
	_, maybe := s.pw.known[prefix(d)]
	s.pw.mu.Unlock()
	if !maybe {
		return false, nil
	}
	loc, found, err := s.indexLoc(ctx, d)
	if err != nil {
		return false, err
	}
	// A committed entry of another length (a corrupt index), or a
	// quarantined one, is replaced by the new one at the next commit.
	return found && loc.size == int64(size) && !s.packedQuarantined(d, loc), nil
}

// packedQuarantined reports whether the writer must not keep the packed
// blob d at loc, because it is quarantined, by this process or (as seen
// at most quarantineReloadEvery ago) by another one.
func (s *Store) packedQuarantined(d storeclient.Digest, loc packLoc) bool {
	s.reloadQuarantine()
	return s.quar.packedBad(d, loc)
}

// pendingCount returns the number of uncommitted packed blobs.
func (s *Store) pendingCount() int {
	s.pw.mu.Lock()
	defer s.pw.mu.Unlock()
	return len(s.pw.pending)
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

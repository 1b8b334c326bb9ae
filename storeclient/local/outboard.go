package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/storefs/storefs/storeclient"
)

// Outboards: see Outboards in the package documentation.

const (
	outboardsDir = "outboards"
	// outboardThreshold is the size above which a blob's bao outboard is
	// kept on disk: the blobs an import writes as files of their own. A
	// smaller blob's outboard is computed when asked for (about 1 ms for
	// 1 MiB) and is only 8 to 1032 bytes, so keeping it would cost a
	// file for little.
	outboardThreshold = 1 << 20
)

// The blob writer starts its treeHasher once the blob passes
// outboardThreshold by reading back what it wrote so far, which it can do
// only while the file is still written through the page cache (before
// directThreshold): this fails to compile otherwise.
var _ [directThreshold - outboardThreshold]struct{}

// errNoStoredOutboard says a blob has no outboard file.
var errNoStoredOutboard = errors.New("no stored outboard")

// outboardPath returns where the outboard of blob d is kept:
// DIR/outboards/ab/abcd…, sharded like DIR/blobs.
func (s *Store) outboardPath(d storeclient.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, outboardsDir, h[0:2], h)
}

// keepsOutboard reports whether a blob of size bytes has its outboard
// kept on disk.
func keepsOutboard(size int64) bool {
	return size > outboardThreshold && storeclient.OutboardSize(size) <= storeclient.MaxOutboardSize
}

// BlobOutboard implements storeclient.OutboardStore: it returns the bao
// outboard of blob d (storeclient's format, storeclient/bao.go). A blob
// of more than 1 MiB has its outboard kept in DIR/outboards; it is read,
// checked in full against the blob's digest (checkOutboard) and returned.
// A smaller blob's outboard is computed from the blob, and so is a kept
// one that is missing or fails the check, which is then written again
// (best effort: a store whose directory cannot be written serves computed
// outboards). A blob whose outboard would be larger than
// storeclient.MaxOutboardSize has none (an error wrapping
// storeclient.ErrNoOutboard). A missing blob is an error wrapping
// storeclient.ErrNotFound, a quarantined one as for OpenBlob.
func (s *Store) BlobOutboard(ctx context.Context, d storeclient.Digest) ([]byte, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("outboard of blob %s: %w", d, err)
	}
	size, err := s.blobSize(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("outboard of blob %s: %w", d, err)
	}
	if storeclient.OutboardSize(size) > storeclient.MaxOutboardSize {
		return nil, fmt.Errorf("blob %s of %d bytes: %w", d, size, storeclient.ErrNoOutboard)
	}
	if !keepsOutboard(size) {
		enc, err := s.computeOutboard(ctx, d, nil, true)
		if err != nil {
			return nil, fmt.Errorf("outboard of blob %s: %w", d, err)
		}
		return enc, nil
	}
	enc, fault := s.readOutboard(d, size)
	if fault == nil {
		return enc, nil
	}
	ch := s.outboardFlight.DoChan(string(d[:]), func() (any, error) {
		if !errors.Is(fault, errNoStoredOutboard) {
			s.log.Warn("kept outboard of a blob is damaged; computing it again from the blob", "store", s.dir, "digest", d.String(), "err", fault)
		}
		// Detached from the caller, as the result is shared and kept.
		ctx := context.WithoutCancel(ctx)
		enc, err := s.computeOutboard(ctx, d, nil, true)
		if err != nil {
			return nil, err
		}
		s.writeOutboard(d, enc)
		return enc, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, fmt.Errorf("outboard of blob %s: %w", d, r.Err)
		}
		enc := r.Val.([]byte)
		if r.Shared {
			enc = bytes.Clone(enc) // each caller may keep or change its own
		}
		return enc, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("outboard of blob %s: %w", d, ctx.Err())
	}
}

// keepOutboard keeps the outboard a blob writer computed (h) for blob d,
// which it has just committed, unless one is kept already: a damaged one
// is found when it is read.
func (s *Store) keepOutboard(d storeclient.Digest, h *treeHasher) {
	enc, root, ok := h.finish()
	if !ok {
		return
	}
	if root != d {
		// Two hashes of the same bytes disagree: a bug, not bit rot.
		s.log.Error("the outboard computed while writing a blob does not match the blob's digest; not kept", "store", s.dir, "digest", d.String(), "outboard_root", root.String())
		return
	}
	if _, err := os.Stat(s.outboardPath(d)); err == nil {
		return
	}
	s.writeOutboard(d, enc)
}

// readOutboard reads the kept outboard of blob d of size bytes and checks
// it in full: an error wraps errNoStoredOutboard when there is none, and
// storeclient.ErrCorrupt when it does not check.
func (s *Store) readOutboard(d storeclient.Digest, size int64) ([]byte, error) {
	enc, err := os.ReadFile(s.outboardPath(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoStoredOutboard
	}
	if err != nil {
		return nil, fmt.Errorf("read outboard of blob %s: %w", d, err)
	}
	if err := checkOutboard(d, size, enc); err != nil {
		return nil, err
	}
	return enc, nil
}

// computeOutboard reads blob d and returns its outboard, calling pace (if
// not nil) before every read as hashRange does. A blob whose bytes turn
// out not to hash to d is an error wrapping storeclient.ErrCorrupt; with
// quarantine set, the copy is also handed to checkCopy, which quarantines
// it as the scrubber would.
func (s *Store) computeOutboard(ctx context.Context, d storeclient.Digest, pace func(int) error, quarantine bool) ([]byte, error) {
	r, err := s.openBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	size := r.Size()
	var src io.Reader = io.NewSectionReader(r, 0, size)
	if pace != nil {
		src = &pacedReader{r: src, pace: pace}
	}
	enc, root, err := storeclient.EncodeOutboard(src, size)
	if err != nil {
		return nil, err
	}
	if root != d {
		if quarantine {
			p := blobPlace{}
			if r.pack != nil {
				p = blobPlace{packed: true, loc: packLoc{pack: r.pack.id, off: r.off, size: r.size}}
			}
			if _, err := s.checkCopy(d, p, make([]byte, verifyBufferSize), nil); err != nil {
				s.log.Warn("cannot check a blob whose outboard showed it corrupt", "store", s.dir, "digest", d.String(), "err", err)
			}
		}
		return nil, fmt.Errorf("blob %s: its %d bytes hash to %s: %w", d, size, root, storeclient.ErrCorrupt)
	}
	return enc, nil
}

// pacedReader calls pace before every Read of r.
type pacedReader struct {
	r    io.Reader
	pace func(int) error
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if err := p.pace(len(b)); err != nil {
		return 0, &paceError{err}
	}
	return p.r.Read(b)
}

// outboardFix says what fixOutboard did.
type outboardFix int

const (
	outboardGood     outboardFix = iota // right, or not kept for the blob's size
	outboardWritten                     // was missing, and was written
	outboardRepaired                    // did not check, and was written again
	outboardFailed                      // could not be written (logged)
)

// fixOutboard checks the kept outboard of blob d of size bytes, a copy of
// which was just hashed and found good, and writes it from the blob if it
// is missing or does not check (logged). pace is as for hashRange; its
// error, wrapped in a *paceError, is the only error returned.
func (s *Store) fixOutboard(ctx context.Context, d storeclient.Digest, size int64, pace func(int) error) (outboardFix, error) {
	if !keepsOutboard(size) {
		return outboardGood, nil
	}
	_, fault := s.readOutboard(d, size)
	if fault == nil {
		return outboardGood, nil
	}
	enc, err := s.computeOutboard(ctx, d, pace, false)
	var pe *paceError
	switch {
	case errors.As(err, &pe):
		return outboardGood, pe
	case errors.Is(err, storeclient.ErrNotFound):
		return outboardGood, nil // removed since it was hashed
	case err != nil:
		s.log.Warn("cannot compute a blob's outboard", "store", s.dir, "digest", d.String(), "err", err)
		return outboardFailed, nil
	}
	if err := s.writeOutboard(d, enc); err != nil {
		return outboardFailed, nil
	}
	if errors.Is(fault, errNoStoredOutboard) {
		return outboardWritten, nil
	}
	s.log.Warn("a kept outboard did not match its blob; written again from the blob", "store", s.dir, "digest", d.String(), "fault", fault)
	return outboardRepaired, nil
}

// writeOutboard keeps enc as the outboard of blob d: written in DIR/tmp,
// then renamed into place, so that the name never shows a partial file.
// It is not synced: an outboard cut short or left with holes by a crash
// fails checkOutboard when it is read and is written again, and the
// writer's outboards reach the disk with the syncfs before the metadata
// anyway. Any opener writes outboards (readers too, as they may quarantine
// blobs): a failure is logged, once per Store at warning level, and
// changes nothing else. The error is returned for counting.
func (s *Store) writeOutboard(d storeclient.Digest, enc []byte) error {
	err := s.putOutboardFile(d, enc)
	if err != nil {
		log := s.log.Debug
		if !s.outboardWarned.Swap(true) {
			log = s.log.Warn
		}
		log("cannot keep a blob's outboard; it is computed when asked for", "store", s.dir, "digest", d.String(), "err", err)
	}
	return err
}

func (s *Store) putOutboardFile(d storeclient.Digest, enc []byte) error {
	path := s.outboardPath(d)
	// Made on demand: stores older than outboards have no such
	// directory, and most shards of a store of small files stay empty.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "outboard-*")
	if err != nil {
		return err
	}
	_, err = f.Write(enc)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// A writer that opens the store clears DIR/tmp: the rename then
		// fails and the outboard is simply not kept.
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write outboard of blob %s: %w", d, err)
	}
	return nil
}

// removeOutboard removes the kept outboard of blob d, if any, after the
// blob was quarantined: the store has no good copy of the blob, and the
// outboard is written again with the next good one.
func (s *Store) removeOutboard(d storeclient.Digest) {
	path := s.outboardPath(d)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("cannot remove the outboard of a quarantined blob", "store", s.dir, "file", path, "err", err)
	}
}

// sweepOutboards removes the kept outboards of blobs the store does not
// have (not stored, or quarantined): left by a crash between quarantining
// a blob and removing its outboard, or kept for a packed blob whose
// writer never committed it. It returns how many it removed. stray, if
// not nil, is called for every file in DIR/outboards that is not an
// outboard; pace, if not nil, with scrubBlobCost before every file, and
// its error ends the sweep. A store without DIR/outboards has nothing to
// sweep.
func (s *Store) sweepOutboards(ctx context.Context, pace func(int) error, stray func(path, detail string)) (int64, error) {
	root := filepath.Join(s.dir, outboardsDir)
	shards, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sweep outboards: %w", err)
	}
	var removed int64
	for _, sh := range shards {
		dir := filepath.Join(root, sh.Name())
		if !sh.IsDir() || !isHexShard(sh.Name()) {
			if stray != nil {
				stray(dir, "not an outboard shard (outboards are regular files named outboards/ab/abcd…)")
			}
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return removed, fmt.Errorf("sweep outboards: %w", err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			d, ok := blobName(filepath.Join(sh.Name(), e.Name()))
			if !ok || !e.Type().IsRegular() {
				if stray != nil {
					stray(path, "not an outboard (outboards are regular files named outboards/ab/abcd…)")
				}
				continue
			}
			if pace != nil {
				if err := pace(scrubBlobCost); err != nil {
					return removed, err
				}
			} else if err := ctx.Err(); err != nil {
				return removed, err
			}
			_, err := s.findBlob(ctx, d, false)
			if !errors.Is(err, storeclient.ErrNotFound) && !errors.Is(err, ErrQuarantined) {
				continue // the blob is there, or the lookup failed: keep it
			}
			if err := os.Remove(path); err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					s.log.Warn("cannot remove the outboard of a blob the store does not have", "store", s.dir, "file", path, "err", err)
				}
				continue
			}
			removed++
			s.log.Info("removed the outboard of a blob the store does not have", "store", s.dir, "digest", d.String())
		}
	}
	return removed, nil
}

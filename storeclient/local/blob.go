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
// storeclient.ErrNotFound (or ErrQuarantined).
func (s *Store) blobSize(ctx context.Context, d storeclient.Digest) (int64, error) {
	p, err := s.findBlob(ctx, d, false)
	if err != nil {
		return 0, err
	}
	return p.size, nil
}

// blobPlace is where the bytes of a stored blob are.
type blobPlace struct {
	// f is the blob's own file if findBlob was asked to open it; nil for
	// a packed blob. id is the blob file's identity.
	f  *os.File
	id fileID
	// packed says the blob is the range loc of a pack.
	packed bool
	loc    packLoc
	size   int64
}

// findBlob finds blob d, in the order given above, and opens its blob
// file if open is set (else it only stats it). A quarantined copy is
// passed over; if no other copy is found, the error wraps ErrQuarantined
// rather than storeclient.ErrNotFound.
func (s *Store) findBlob(ctx context.Context, d storeclient.Digest, open bool) (blobPlace, error) {
	if loc, ok := s.cachedLoc(d); ok {
		if !s.quar.packedBad(d, loc) {
			return blobPlace{packed: true, loc: loc, size: loc.size}, nil
		}
		s.locs.drop(d) // the index may point at a repaired copy now
	}
	path := s.blobPath(d)
	var f *os.File
	var fi os.FileInfo
	var err error
	if open {
		if f, err = os.Open(path); err == nil {
			if fi, err = f.Stat(); err != nil {
				f.Close()
				return blobPlace{}, err
			}
		}
	} else {
		fi, err = os.Stat(path)
	}
	if err == nil {
		id := idOf(fi)
		if s.quar.fileBad(d, id) {
			if f != nil {
				f.Close()
			}
			return blobPlace{}, s.quar.lookup(d)
		}
		return blobPlace{f: f, id: id, size: fi.Size()}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return blobPlace{}, err
	}
	loc, found, err := s.indexLoc(ctx, d)
	if err != nil {
		return blobPlace{}, err
	}
	if found && !s.quar.packedBad(d, loc) {
		return blobPlace{packed: true, loc: loc, size: loc.size}, nil
	}
	if !found {
		// Another process may have quarantined the blob: moved its file
		// away. Reading DIR/quarantine costs one failed open while
		// nothing was ever quarantined.
		if err := s.quar.load(); err != nil {
			// Not a warning: it would come with every lookup of a
			// missing blob. Open and the scrubber warn.
			s.log.Debug("cannot read the quarantine", "store", s.dir, "err", err)
		}
	}
	if qerr := s.quar.lookup(d); qerr != nil {
		return blobPlace{}, qerr
	}
	return blobPlace{}, storeclient.ErrNotFound
}

// OpenBlob implements storeclient.BlobService. The reader it returns is a
// *BlobReader, backed by the blob's file or by its range of a pack file.
// A quarantined blob is refused with an error wrapping ErrQuarantined
// and storeclient.ErrCorrupt.
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
	p, err := s.findBlob(ctx, d, true)
	if err != nil {
		return nil, err
	}
	if !p.packed {
		if err := s.verifyAtOpen(ctx, d, p); err != nil {
			p.f.Close()
			return nil, err
		}
		return &BlobReader{f: p.f, size: p.size, s: s, d: d, id: p.id}, nil
	}
	if err := s.packInFile(p.loc); err != nil {
		return nil, err
	}
	if err := s.verifyAtOpen(ctx, d, p); err != nil { // once its bytes are in the pack
		return nil, err
	}
	pf, err := s.acquirePack(p.loc.pack)
	if err != nil {
		return nil, err
	}
	return &BlobReader{f: pf.f, off: p.loc.off, size: p.loc.size, s: s, d: d, pack: pf}, nil
}

// BlobReader reads a blob of a local store straight from its file: the
// blob's own file, or its range of a pack file. ReadAt is safe for
// concurrent use (it is pread(2)).
type BlobReader struct {
	f    *os.File
	off  int64 // where the blob starts in f
	size int64
	s    *Store
	d    storeclient.Digest
	// id is the identity of a blob file of its own. pack is set for a
	// packed blob: f is the store's shared descriptor of the pack,
	// released by Close.
	id     fileID
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
	if err := r.quarantined(); err != nil {
		return 0, err
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

// quarantined returns the error for a blob quarantined since the reader
// was opened, or nil. With nothing quarantined it costs one atomic load.
func (r *BlobReader) quarantined() error {
	q := r.s.quar
	if q.empty() {
		return nil
	}
	var bad bool
	if r.pack != nil {
		bad = q.packedBad(r.d, packLoc{pack: r.pack.id, off: r.off, size: r.size})
	} else {
		bad = q.fileBad(r.d, r.id)
	}
	if !bad {
		return nil
	}
	return fmt.Errorf("read blob %s: %w", r.d, q.lookup(r.d))
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

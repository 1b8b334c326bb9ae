package local

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/storefs/storefs/storeclient"
)

// BlobFile opens the file holding the blob with digest d, read-only, for
// callers that hand a file to the kernel: the blob is the bytes
// [off, off+size) of f, where off is 0 for a blob file of its own and the
// blob's offset for a packed blob (then f is the pack, holding other blobs
// too). The caller closes f. Its content in that range is immutable and
// was hashed when it was written (the store is trusted-local); a missing
// blob wraps storeclient.ErrNotFound.
func (s *Store) BlobFile(ctx context.Context, d storeclient.Digest) (f *os.File, off int64, err error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	loc, packed := s.cachedLoc(d)
	if !packed {
		f, err := os.Open(s.blobPath(d))
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			if err != nil {
				return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
			}
			return f, 0, nil
		}
		loc, packed, err = s.indexLoc(ctx, d)
		if err != nil {
			return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
		}
		if !packed {
			return nil, 0, fmt.Errorf("open blob file %s: %w", d, storeclient.ErrNotFound)
		}
	}
	if err := s.packInFile(loc); err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	f, err = os.Open(s.packPath(loc.pack))
	if err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	return f, loc.off, nil
}

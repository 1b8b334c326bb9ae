package local

import (
	"context"
	"fmt"
	"os"

	"github.com/storefs/storefs/storeclient"
)

// The local store keeps blobs as files and reads packed ones ahead.
var (
	_ storeclient.BlobFiler      = (*Store)(nil)
	_ storeclient.BlobPrefetcher = (*Store)(nil)
)

// BlobFile implements storeclient.BlobFiler. It opens the file holding the blob with digest d, read-only, for
// callers that hand a file to the kernel: the blob is the bytes
// [off, off+size) of f, where off is 0 for a blob file of its own and the
// blob's offset for a packed blob (then f is the pack, holding other blobs
// too). The caller closes f. Its content in that range is immutable and
// was hashed when it was written (the store is trusted-local); a missing
// blob wraps storeclient.ErrNotFound, a quarantined one ErrQuarantined and
// storeclient.ErrCorrupt.
func (s *Store) BlobFile(ctx context.Context, d storeclient.Digest) (f *os.File, off int64, err error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	p, err := s.findBlob(ctx, d, true)
	if err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	if !p.packed {
		if err := s.verifyAtOpen(ctx, d, p); err != nil {
			p.f.Close()
			return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
		}
		return p.f, 0, nil
	}
	if err := s.packInFile(p.loc); err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	if err := s.verifyAtOpen(ctx, d, p); err != nil { // once its bytes are in the pack
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	f, err = os.Open(s.packPath(p.loc.pack))
	if err != nil {
		return nil, 0, fmt.Errorf("open blob file %s: %w", d, err)
	}
	return f, p.loc.off, nil
}

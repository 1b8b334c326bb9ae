package local

import (
	"context"
	"fmt"
	"os"

	"github.com/storefs/storefs/storeclient"
)

// BlobFile opens the file holding the blob with digest d, read-only, for
// callers that hand a file to the kernel (FUSE passthrough, splice). The
// caller closes it. Its content is immutable and was hashed when it was
// written (the store is trusted-local); a missing blob wraps
// storeclient.ErrNotFound.
func (s *Store) BlobFile(ctx context.Context, d storeclient.Digest) (*os.File, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("open blob file %s: %w", d, err)
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, fmt.Errorf("open blob file %s: %w", d, notFound(err))
	}
	return f, nil
}

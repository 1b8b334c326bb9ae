package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/storefs/storefs/storeclient"
)

// verifiedCacheSize bounds how many blob digests a Store with
// Options.VerifyOnOpen remembers as verified (about 100 bytes each with
// the LRU's overhead): a blob opened again after it was dropped is hashed
// again.
const verifiedCacheSize = 1 << 16

// verifyOpenBufferSize is the read buffer of a verification at open.
const verifyOpenBufferSize = 256 << 10

// verifyAtOpen hashes blob d, found at p, in full if this process has not
// verified it yet (Options.VerifyOnOpen). A corrupt copy is quarantined
// and its error returned; so is the error of a copy that cannot be read.
// Concurrent first opens of one blob share one hashing, which runs detached
// from their contexts (each caller stops waiting when its own ends) and
// reads through descriptors of its own, since a caller that gives up
// closes its file.
func (s *Store) verifyAtOpen(ctx context.Context, d storeclient.Digest, p blobPlace) error {
	if s.verified == nil || s.verified.Contains(d) {
		return nil
	}
	if p.packed {
		p = blobPlace{packed: true, loc: p.loc}
	} else {
		p = blobPlace{} // checkCopy opens the blob file itself
	}
	ch := s.verifyFlight.DoChan(string(d[:]), func() (any, error) {
		buf := s.verifyBufs.Get().(*[]byte)
		defer s.verifyBufs.Put(buf)
		c, err := s.checkCopy(d, p, *buf, nil)
		switch {
		case errors.Is(err, errCopyGone):
			return nil, storeclient.ErrNotFound // removed since it was found
		case err != nil:
			return nil, err
		case c.unreadable:
			return nil, fmt.Errorf("verify blob %s at open: %s", d, c.fault)
		case c.fault != "":
			if qerr := s.quar.lookup(d); qerr != nil {
				return nil, qerr
			}
			// Replaced by a good copy while it was hashed: not
			// quarantined, and not verified either.
			return nil, fmt.Errorf("verify blob %s at open: %s: %w", d, c.fault, storeclient.ErrCorrupt)
		}
		s.verified.Add(d, struct{}{})
		return nil, nil
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

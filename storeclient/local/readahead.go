package local

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
)

const (
	// readaheadStep is how much one readahead hint asks for: no more
	// than the kernel's smallest usual limit per call (its readahead
	// window or the device's largest request, whichever is larger).
	readaheadStep = 2 << 20
	// readaheadGap is the largest gap between two packed blobs that
	// WillNeed reads through rather than skips: one longer request costs
	// less than two.
	readaheadGap = 256 << 10
	// readaheadBeyond is how far past the last of the blobs WillNeed reads
	// ahead in their pack: an import packs a tree in the order a walk
	// reads it, so what follows a directory's files is, most likely, the
	// next directory's, and reading it now keeps the disk ahead of the
	// walk instead of one directory behind.
	readaheadBeyond = 8 << 20
)

// WillNeed tells the store that the blobs ds are about to be read, so that
// it starts reading them from disk in the background (a FUSE frontend
// calls it when the first file of a directory is opened). The packed ones
// are looked up in one read transaction (and cached), their ranges merged
// pack by pack, and the kernel asked to read each range ahead: the small
// files of one directory lie together in a pack, so this is one sequential
// read. It returns the digests that are not packed (blob files of their
// own, or missing): opening a file waits for its inode to be read, so a
// caller that wants those read ahead does so from many goroutines.
func (s *Store) WillNeed(ctx context.Context, ds []storeclient.Digest) ([]storeclient.Digest, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("read ahead: %w", err)
	}
	var locs []packLoc
	var unknown []storeclient.Digest
	for _, d := range ds {
		if loc, ok := s.cachedLoc(d); ok {
			locs = append(locs, loc)
		} else {
			unknown = append(unknown, d)
		}
	}
	var rest []storeclient.Digest
	if len(unknown) > 0 {
		var found []packedEntry
		err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketPacked)
			for _, d := range unknown {
				var v []byte
				if b != nil {
					v = b.Get(d[:])
				}
				if v == nil {
					rest = append(rest, d)
					continue
				}
				loc, err := decodeLoc(v)
				if err != nil {
					return fmt.Errorf("blob %s: %w", d, err)
				}
				found = append(found, packedEntry{d, loc})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read ahead: %w", err)
		}
		for _, e := range found {
			s.locs.put(e.d, e.loc)
			locs = append(locs, e.loc)
		}
	}
	ranges := mergeRanges(locs)
	for i := range ranges {
		if i == len(ranges)-1 || ranges[i+1].pack != ranges[i].pack {
			ranges[i].size += readaheadBeyond
		}
	}
	for _, r := range ranges {
		if err := ctx.Err(); err != nil {
			return rest, fmt.Errorf("read ahead: %w", err)
		}
		pf, err := s.acquirePack(r.pack)
		if err != nil {
			return rest, fmt.Errorf("read ahead: %w", err)
		}
		// An entry's size comes from the database: never ask for more
		// than the pack holds (a corrupt size of 2^62 would otherwise
		// keep this loop busy for days).
		if fi, err := pf.f.Stat(); err == nil && r.off < fi.Size() {
			readahead(pf.f, r.off, min(r.size, fi.Size()-r.off))
		}
		s.releasePack(pf)
	}
	return rest, nil
}

// mergeRanges sorts locs by pack and offset and merges ranges of one pack
// that overlap or lie at most readaheadGap apart.
func mergeRanges(locs []packLoc) []packLoc {
	slices.SortFunc(locs, func(a, b packLoc) int {
		if a.pack != b.pack {
			return cmp.Compare(a.pack, b.pack)
		}
		return cmp.Compare(a.off, b.off)
	})
	var out []packLoc
	for _, l := range locs {
		if n := len(out); n > 0 && out[n-1].pack == l.pack && l.off <= out[n-1].off+out[n-1].size+readaheadGap {
			last := &out[n-1]
			last.size = max(last.size, l.off+l.size-last.off)
			continue
		}
		out = append(out, l)
	}
	return out
}

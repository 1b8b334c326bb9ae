package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
)

// scanPage is how many records a scan copies out of one read transaction.
// Scans never hold a transaction while the caller runs, so a caller may
// write to the store (bbolt would otherwise block a writer that must grow
// the file until the reader finishes).
const scanPage = 512

// get looks key up in b. Unlike Bucket.Get it tells an empty value (the
// empty Directory is stored as zero bytes) from a missing key.
func get(b *bolt.Bucket, key []byte) (value []byte, found bool) {
	k, v := b.Cursor().Seek(key)
	if !bytes.Equal(k, key) {
		return nil, false
	}
	return v, true
}

// GetDirectory implements storeclient.DirectoryService. The stored bytes
// are re-hashed; a mismatch is an error wrapping storeclient.ErrCorrupt.
func (s *Store) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("get directory %s: %w", d, err)
	}
	var raw []byte
	var found bool
	err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
		b, err := requiredBucket(tx, bucketDirectories)
		if err != nil {
			return err
		}
		raw, found = get(b, d[:])
		raw = bytes.Clone(raw)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get directory %s: %w", d, err)
	}
	if !found {
		return nil, fmt.Errorf("get directory %s: %w", d, storeclient.ErrNotFound)
	}
	dir, err := decodeDirectory(d, raw)
	if err != nil {
		return nil, fmt.Errorf("get directory: %w", err)
	}
	return dir, nil
}

// decodeDirectory checks stored bytes against the digest they are stored
// under and decodes them.
func decodeDirectory(d storeclient.Digest, raw []byte) (*storeclient.Directory, error) {
	if got := storeclient.HashBytes(raw); got != d {
		return nil, fmt.Errorf("directory %s: stored bytes hash to %s: %w", d, got, storeclient.ErrCorrupt)
	}
	dir, err := storeclient.UnmarshalDirectory(raw)
	if err != nil {
		// A ValidationError already wraps ErrCorrupt.
		return nil, fmt.Errorf("directory %s: %w", d, err)
	}
	return dir, nil
}

// PutDirectory implements storeclient.DirectoryService, in one database
// transaction (one fsync). Use PutDirectories for many.
func (s *Store) PutDirectory(ctx context.Context, dir *storeclient.Directory) (storeclient.Digest, error) {
	d := dir.Digest()
	if err := s.PutDirectories(ctx, []*storeclient.Directory{dir}); err != nil {
		return storeclient.Digest{}, err
	}
	return d, nil
}

// PutDirectories stores many Directories in one database transaction, so
// a large import pays for one fsync instead of one per Directory. dirs
// must be ordered leaves first: each child Directory must be stored
// already or come earlier in dirs, with the size its parent records.
// Either all of dirs are stored or, on error, none.
//
// Importers find it by type assertion on the interface
//
//	interface {
//		PutDirectories(ctx context.Context, dirs []*storeclient.Directory) error
//	}
//
// and fall back to PutDirectory for stores without it.
func (s *Store) PutDirectories(ctx context.Context, dirs []*storeclient.Directory) error {
	if err := s.usable(ctx, true); err != nil {
		return fmt.Errorf("put directories: %w", err)
	}
	// Packed blobs are committed with the Directories, after the sync
	// that makes their bytes durable: taken before it, so it covers them.
	packed, err := s.pendingEntries()
	if err != nil {
		return fmt.Errorf("put directories: %w", err)
	}
	if err := s.syncBlobs(); err != nil {
		return fmt.Errorf("put directories: %w", err)
	}
	type encoded struct {
		d   storeclient.Digest
		raw []byte
		dir *storeclient.Directory
	}
	enc := make([]encoded, len(dirs))
	for i, dir := range dirs {
		raw := dir.Marshal()
		enc[i] = encoded{storeclient.HashBytes(raw), raw, dir}
	}
	err = s.withDB(ctx, true, func(tx *bolt.Tx) error {
		if err := putPacked(tx, packed); err != nil {
			return err
		}
		b, err := requiredBucket(tx, bucketDirectories)
		if err != nil {
			return err
		}
		// Sizes of the Directories of this batch, so a child put earlier
		// in the batch is not decoded again.
		sizes := make(map[storeclient.Digest]uint64, len(enc))
		for _, e := range enc {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("put directory %s: %w", e.d, err)
			}
			if _, found := get(b, e.d[:]); !found {
				if err := checkChildren(b, e.d, e.dir, sizes); err != nil {
					return err
				}
				if err := b.Put(e.d[:], e.raw); err != nil {
					return fmt.Errorf("put directory %s: %w", e.d, err)
				}
			}
			sizes[e.d] = e.dir.Size()
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.packedCommitted(packed)
	return nil
}

// checkChildren checks that every child Directory of dir is stored with
// the size dir records for it.
func checkChildren(b *bolt.Bucket, d storeclient.Digest, dir *storeclient.Directory, sizes map[storeclient.Digest]uint64) error {
	for _, e := range dir.Entries() {
		if e.Node.Kind() != storeclient.KindDirectory {
			continue
		}
		size, err := storedDirectorySize(b, e.Node.Digest(), sizes)
		if err != nil {
			return fmt.Errorf("put directory %s: child %q: %w", d, string(e.Name), err)
		}
		if size != e.Node.Size() {
			return fmt.Errorf("put directory %s: child %q: %w", d, string(e.Name),
				&storeclient.ValidationError{Rule: storeclient.RuleSize, Detail: fmt.Sprintf("recorded size %d, stored Directory %s has size %d", e.Node.Size(), e.Node.Digest(), size)})
		}
	}
	return nil
}

// storedDirectorySize returns the size of a stored Directory, or an error
// wrapping ErrNotFound. The stored bytes are decoded but not re-hashed
// (that is Verify's job and GetDirectory's).
func storedDirectorySize(b *bolt.Bucket, d storeclient.Digest, sizes map[storeclient.Digest]uint64) (uint64, error) {
	if size, ok := sizes[d]; ok {
		return size, nil
	}
	raw, found := get(b, d[:])
	if !found {
		return 0, fmt.Errorf("directory %s: %w", d, storeclient.ErrNotFound)
	}
	dir, err := storeclient.UnmarshalDirectory(raw)
	if err != nil {
		return 0, fmt.Errorf("directory %s: %w", d, err)
	}
	if sizes != nil {
		sizes[d] = dir.Size()
	}
	return dir.Size(), nil
}

// GetPathInfo implements storeclient.PathInfoService.
func (s *Store) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, fmt.Errorf("get pathinfo %s: %w", d, err)
	}
	var raw []byte
	var found bool
	err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
		b, err := requiredBucket(tx, bucketPathInfos)
		if err != nil {
			return err
		}
		raw, found = get(b, d[:])
		raw = bytes.Clone(raw)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get pathinfo %s: %w", d, err)
	}
	if !found {
		return nil, fmt.Errorf("get pathinfo %s: %w", d, storeclient.ErrNotFound)
	}
	p, err := decodePathInfo(d[:], raw)
	if err != nil {
		return nil, fmt.Errorf("get pathinfo: %w", err)
	}
	return p, nil
}

// decodePathInfo decodes a stored PathInfo and checks it is stored under
// its own store path's digest.
func decodePathInfo(key, raw []byte) (*storeclient.PathInfo, error) {
	p, err := storeclient.UnmarshalPathInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("pathinfo %x: %w", key, err)
	}
	if !bytes.Equal(p.StorePath.Digest[:], key) {
		return nil, fmt.Errorf("pathinfo %s stored under key %x: %w", p.StorePath.Basename(), key, storeclient.ErrCorrupt)
	}
	return p, nil
}

// PutPathInfo implements storeclient.PathInfoService. It refuses a
// PathInfo whose root content is not stored: the root Directory with the
// recorded size, or the root file's blob with the recorded length.
func (s *Store) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	if err := s.usable(ctx, true); err != nil {
		return fmt.Errorf("put pathinfo: %w", err)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("put pathinfo: %w", err)
	}
	name := p.StorePath.Basename()
	packed, err := s.pendingEntries() // committed with the PathInfo, as in PutDirectories
	if err != nil {
		return fmt.Errorf("put pathinfo %s: %w", name, err)
	}
	if err := s.syncBlobs(); err != nil {
		return fmt.Errorf("put pathinfo %s: %w", name, err)
	}
	if p.Node.Kind() == storeclient.KindFile {
		if err := s.checkBlob(ctx, p.Node.Digest(), p.Node.Size()); err != nil {
			return fmt.Errorf("put pathinfo %s: root %w", name, err)
		}
	}
	raw := p.Marshal()
	err = s.withDB(ctx, true, func(tx *bolt.Tx) error {
		if err := putPacked(tx, packed); err != nil {
			return err
		}
		pb, err := requiredBucket(tx, bucketPathInfos)
		if err != nil {
			return err
		}
		if p.Node.Kind() == storeclient.KindDirectory {
			db, err := requiredBucket(tx, bucketDirectories)
			if err != nil {
				return err
			}
			size, err := storedDirectorySize(db, p.Node.Digest(), nil)
			if err != nil {
				return fmt.Errorf("put pathinfo %s: root %w", name, err)
			}
			if size != p.Node.Size() {
				return fmt.Errorf("put pathinfo %s: root: %w", name,
					&storeclient.ValidationError{Rule: storeclient.RuleSize, Detail: fmt.Sprintf("recorded size %d, stored Directory %s has size %d", p.Node.Size(), p.Node.Digest(), size)})
			}
		}
		if err := pb.Put(p.StorePath.Digest[:], raw); err != nil {
			return fmt.Errorf("put pathinfo %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.packedCommitted(packed)
	return nil
}

// checkBlob checks that a blob is stored with the given length.
func (s *Store) checkBlob(ctx context.Context, d storeclient.Digest, size uint64) error {
	got, err := s.blobSize(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if uint64(got) != size {
		return fmt.Errorf("blob %s has %d bytes, recorded size is %d: %w", d, got, size, storeclient.ErrCorrupt)
	}
	return nil
}

// ListPathInfos implements storeclient.PathInfoService. PathInfos come in
// order of their store path digest; one that cannot be decoded ends the
// sequence with an error wrapping storeclient.ErrCorrupt.
func (s *Store) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) {
		if err := s.usable(ctx, false); err != nil {
			yield(nil, fmt.Errorf("list pathinfos: %w", err))
			return
		}
		for k, v := range s.scan(ctx, bucketPathInfos) {
			if k == nil {
				yield(nil, fmt.Errorf("list pathinfos: %w", v.err))
				return
			}
			p, err := decodePathInfo(k, v.value)
			if err != nil {
				yield(nil, fmt.Errorf("list pathinfos: %w", err))
				return
			}
			if !yield(p, nil) {
				return
			}
		}
	}
}

// scanValue is a value of a scan, or the error that ended it (then the key
// is nil).
type scanValue struct {
	value []byte
	err   error
}

// scan yields copies of every key and value of a bucket in key order,
// scanPage at a time, without holding a transaction while the caller runs.
// An error is yielded with a nil key and ends the scan.
func (s *Store) scan(ctx context.Context, bucket []byte) iter.Seq2[[]byte, scanValue] {
	return func(yield func([]byte, scanValue) bool) {
		var after []byte
		for {
			if err := ctx.Err(); err != nil {
				yield(nil, scanValue{err: err})
				return
			}
			var keys, values [][]byte
			err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
				b := tx.Bucket(bucket)
				if b == nil && !bytes.Equal(bucket, bucketPacked) {
					return damaged(fmt.Sprintf("bucket %q", bucket), errors.New("not found"))
				}
				if b == nil {
					return fmt.Errorf("bucket %q: %w", bucket, errNoBucket)
				}
				c := b.Cursor()
				var k, v []byte
				if after == nil {
					k, v = c.First()
				} else if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
				for ; k != nil && len(keys) < scanPage; k, v = c.Next() {
					keys = append(keys, bytes.Clone(k))
					values = append(values, bytes.Clone(v))
				}
				return nil
			})
			if err != nil {
				yield(nil, scanValue{err: err})
				return
			}
			for i := range keys {
				if !yield(keys[i], scanValue{value: values[i]}) {
					return
				}
			}
			if len(keys) < scanPage {
				return
			}
			after = keys[len(keys)-1]
		}
	}
}

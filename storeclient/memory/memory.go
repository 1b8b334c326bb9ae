// Package memory is an in-memory castore, the `memory:` store URL. It is
// used for tests and as the fast layer of a cache. Everything is lost when
// the process ends.
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/storefs/storefs/storeclient"
)

// Store is an in-memory storeclient.Store, safe for concurrent use.
type Store struct {
	mu        sync.RWMutex
	blobs     map[storeclient.Digest][]byte
	dirs      map[storeclient.Digest]*storeclient.Directory
	pathInfos map[storeclient.StorePathDigest]*storeclient.PathInfo
	closed    bool
}

var (
	_ storeclient.Store         = (*Store)(nil)
	_ storeclient.OutboardStore = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{
		blobs:     make(map[storeclient.Digest][]byte),
		dirs:      make(map[storeclient.Digest]*storeclient.Directory),
		pathInfos: make(map[storeclient.StorePathDigest]*storeclient.PathInfo),
	}
}

var errClosed = errors.New("memory store is closed")

// TrustedLocal reports that this store's data never needs re-verification:
// everything in it was hashed when it was put.
func (s *Store) TrustedLocal() bool { return true }

// StatBlob implements storeclient.BlobService.
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errClosed
	}
	b, ok := s.blobs[d]
	if !ok {
		return 0, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
	}
	return int64(len(b)), nil
}

// OpenBlob implements storeclient.BlobService.
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
	}
	return blobReader{bytes.NewReader(b)}, nil
}

// BlobOutboard implements storeclient.OutboardStore: it computes the bao
// outboard of blob d from its bytes at every call (about 0.75 ms per MiB),
// so that code written against the capability can be tested in memory.
// A blob whose outboard would pass storeclient.MaxOutboardSize has none
// (an error wrapping storeclient.ErrNoOutboard).
func (s *Store) BlobOutboard(ctx context.Context, d storeclient.Digest) ([]byte, error) {
	s.mu.RLock()
	b, ok := s.blobs[d]
	closed := s.closed
	s.mu.RUnlock()
	switch {
	case closed:
		return nil, errClosed
	case !ok:
		return nil, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
	case storeclient.OutboardSize(int64(len(b))) > storeclient.MaxOutboardSize:
		return nil, fmt.Errorf("blob %s of %d bytes: %w", d, len(b), storeclient.ErrNoOutboard)
	}
	// Blobs are never changed once put, so b is read outside the lock.
	enc, root, err := storeclient.EncodeOutboard(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("outboard of blob %s: %w", d, err)
	}
	if root != d {
		return nil, fmt.Errorf("outboard of blob %s: its bytes hash to %s: %w", d, root, storeclient.ErrCorrupt)
	}
	return enc, nil
}

type blobReader struct{ *bytes.Reader }

func (blobReader) Close() error { return nil }

// NewBlobWriter implements storeclient.BlobService.
func (s *Store) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	return &blobWriter{s: s, h: storeclient.NewHasher()}, nil
}

type blobWriter struct {
	s    *Store
	buf  bytes.Buffer
	h    *blake3.Hasher
	done bool
}

func (w *blobWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a committed or closed blob writer")
	}
	w.h.Write(p)
	return w.buf.Write(p)
}

func (w *blobWriter) Commit() (storeclient.Digest, error) {
	if w.done {
		return storeclient.Digest{}, errors.New("commit of a committed or closed blob writer")
	}
	w.done = true
	d := storeclient.Digest(w.h.Sum(nil))
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.closed {
		return storeclient.Digest{}, errClosed
	}
	if _, ok := w.s.blobs[d]; !ok {
		w.s.blobs[d] = bytes.Clone(w.buf.Bytes())
	}
	w.buf = bytes.Buffer{}
	return d, nil
}

func (w *blobWriter) Close() error {
	w.done = true
	w.buf = bytes.Buffer{}
	return nil
}

// GetDirectory implements storeclient.DirectoryService.
func (s *Store) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	dir, ok := s.dirs[d]
	if !ok {
		return nil, fmt.Errorf("directory %s: %w", d, storeclient.ErrNotFound)
	}
	return dir, nil
}

// PutDirectory implements storeclient.DirectoryService.
func (s *Store) PutDirectory(ctx context.Context, dir *storeclient.Directory) (storeclient.Digest, error) {
	d := dir.Digest()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storeclient.Digest{}, errClosed
	}
	for _, e := range dir.Entries() {
		if e.Node.Kind() != storeclient.KindDirectory {
			continue
		}
		child, ok := s.dirs[e.Node.Digest()]
		if !ok {
			return storeclient.Digest{}, fmt.Errorf("put directory %s: child %q: directory %s: %w", d, string(e.Name), e.Node.Digest(), storeclient.ErrNotFound)
		}
		if child.Size() != e.Node.Size() {
			return storeclient.Digest{}, fmt.Errorf("put directory %s: child %q: %w", d, string(e.Name),
				&storeclient.ValidationError{Rule: storeclient.RuleSize, Detail: fmt.Sprintf("recorded size %d, actual %d", e.Node.Size(), child.Size())})
		}
	}
	s.dirs[d] = dir
	return d, nil
}

// GetPathInfo implements storeclient.PathInfoService.
func (s *Store) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	p, ok := s.pathInfos[d]
	if !ok {
		return nil, fmt.Errorf("pathinfo %s: %w", d, storeclient.ErrNotFound)
	}
	return p, nil
}

// PutPathInfo implements storeclient.PathInfoService. It does not check
// that the content exists, so tests can build stores with missing objects.
func (s *Store) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("put pathinfo: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	s.pathInfos[p.StorePath.Digest] = p
	return nil
}

// ListPathInfos implements storeclient.PathInfoService.
func (s *Store) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) {
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			yield(nil, errClosed)
			return
		}
		all := make([]*storeclient.PathInfo, 0, len(s.pathInfos))
		for _, p := range s.pathInfos {
			all = append(all, p)
		}
		s.mu.RUnlock()
		for _, p := range all {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			if !yield(p, nil) {
				return
			}
		}
	}
}

// Close implements storeclient.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

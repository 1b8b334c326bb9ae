// Package cache layers a fast store (memory or local) in front of a slow
// one (usually a grpc+ store): the `cache:FAST|SLOW` store URL.
//
// Reads go to the fast store first. A blob or Directory missing there is
// fetched from the slow store, checked, written into the fast store and
// served from it; concurrent readers of the same missing object share one
// fetch (singleflight), so a hundred readers of one blob cause one
// transfer. A Directory is fetched with its whole subtree (the fast store
// takes Directories leaves first), in one recursive Get when the slow store
// offers GetDirectoryTree. PathInfos are read from the slow store, which
// is authoritative, and copied into the fast one when it accepts them.
// Writes go to the slow store and then to the fast one.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"

	"golang.org/x/sync/singleflight"

	"github.com/storefs/storefs/storeclient"
)

// treeGetter is implemented by slow stores that fetch a Directory tree in
// one call (grpcstore.Store).
type treeGetter interface {
	GetDirectoryTree(ctx context.Context, d storeclient.Digest) ([]*storeclient.Directory, error)
}

// Store is a fast store in front of a slow one.
type Store struct {
	fast, slow storeclient.Store
	log        *slog.Logger
	flight     singleflight.Group

	// ctx bounds the fills, which run detached from the reader that
	// started them (other readers may be waiting for the same fill).
	ctx    context.Context
	cancel context.CancelFunc
}

var (
	_ storeclient.Store        = (*Store)(nil)
	_ storeclient.TrustedStore = (*Store)(nil)
)

// New returns a Store that fills fast from slow. It owns both: Close
// closes them.
func New(fast, slow storeclient.Store, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{fast: fast, slow: slow, log: logger, ctx: ctx, cancel: cancel}
}

// TrustedLocal implements storeclient.TrustedStore: the Store is trusted
// when its fast store is. Everything served comes from the fast store, and
// what was filled into it was verified on the way (blob digests re-hashed
// here, Directories by the slow store's GetDirectory and the fast store's
// re-hash). The cache forwards no other capability (see
// storeclient/capability.go).
func (s *Store) TrustedLocal() bool { return storeclient.IsTrustedLocal(s.fast) }

// Close closes both stores.
func (s *Store) Close() error {
	s.cancel()
	return errors.Join(s.fast.Close(), s.slow.Close())
}

// shared runs fill once for all concurrent callers with the same key and
// gives each its result; each caller stops waiting when its own ctx ends.
func (s *Store) shared(ctx context.Context, key string, fill func(ctx context.Context) (any, error)) (any, error) {
	ch := s.flight.DoChan(key, func() (any, error) {
		return fill(s.ctx)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		return r.Val, r.Err
	}
}

// fillOnce is shared for fills that return nothing.
func (s *Store) fillOnce(ctx context.Context, key string, fill func(ctx context.Context) error) error {
	_, err := s.shared(ctx, key, func(ctx context.Context) (any, error) { return nil, fill(ctx) })
	return err
}

// StatBlob implements storeclient.BlobService.
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	n, err := s.fast.StatBlob(ctx, d)
	if errors.Is(err, storeclient.ErrNotFound) {
		return s.slow.StatBlob(ctx, d)
	}
	return n, err
}

// OpenBlob implements storeclient.BlobService, filling the fast store
// first if the blob is not in it.
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := s.fast.OpenBlob(ctx, d)
	if !errors.Is(err, storeclient.ErrNotFound) {
		return r, err
	}
	if err := s.fillOnce(ctx, "blob "+d.String(), func(ctx context.Context) error { return s.fillBlob(ctx, d) }); err != nil {
		return nil, err
	}
	return s.fast.OpenBlob(ctx, d)
}

// fillBlob copies a blob from slow to fast, checking its digest.
func (s *Store) fillBlob(ctx context.Context, d storeclient.Digest) error {
	if _, err := s.fast.StatBlob(ctx, d); err == nil {
		return nil // filled by a flight that just ended
	}
	r, err := s.slow.OpenBlob(ctx, d)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := s.fast.NewBlobWriter(ctx)
	if err != nil {
		return fmt.Errorf("cache: fill blob %s: %w", d, err)
	}
	defer w.Close()
	if _, err := io.Copy(w, io.NewSectionReader(r, 0, r.Size())); err != nil {
		return fmt.Errorf("cache: fill blob %s: %w", d, err)
	}
	got, err := w.Commit()
	if err != nil {
		return fmt.Errorf("cache: fill blob %s: %w", d, err)
	}
	if got != d {
		return fmt.Errorf("cache: fill blob %s: the slow store sent bytes hashing to %s: %w", d, got, storeclient.ErrCorrupt)
	}
	s.log.Debug("cache: filled blob", "digest", d.String(), "bytes", r.Size())
	return nil
}

// NewBlobWriter implements storeclient.BlobService: the bytes go to both
// stores.
func (s *Store) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	sw, err := s.slow.NewBlobWriter(ctx)
	if err != nil {
		return nil, err
	}
	fw, err := s.fast.NewBlobWriter(ctx)
	if err != nil {
		sw.Close()
		return nil, err
	}
	return &teeWriter{slow: sw, fast: fw}, nil
}

type teeWriter struct{ slow, fast storeclient.BlobWriter }

func (w *teeWriter) Write(p []byte) (int, error) {
	n, err := w.slow.Write(p)
	if err != nil {
		return n, err
	}
	return w.fast.Write(p)
}

func (w *teeWriter) Commit() (storeclient.Digest, error) {
	d, err := w.slow.Commit()
	if err != nil {
		w.fast.Close()
		return d, err
	}
	fd, err := w.fast.Commit()
	if err != nil {
		return d, fmt.Errorf("cache: store blob %s in the fast store: %w", d, err)
	}
	if fd != d {
		return d, fmt.Errorf("cache: stores disagree on the digest of a blob: %s and %s: %w", d, fd, storeclient.ErrCorrupt)
	}
	return d, nil
}

func (w *teeWriter) Close() error { return errors.Join(w.slow.Close(), w.fast.Close()) }

// GetDirectory implements storeclient.DirectoryService, filling the fast
// store with the Directory's subtree first if it is not in it.
func (s *Store) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	dir, err := s.fast.GetDirectory(ctx, d)
	if !errors.Is(err, storeclient.ErrNotFound) {
		return dir, err
	}
	if err := s.fillOnce(ctx, "directory "+d.String(), func(ctx context.Context) error { return s.fillTree(ctx, d) }); err != nil {
		return nil, err
	}
	return s.fast.GetDirectory(ctx, d)
}

// fillTree copies the tree below d from slow to fast, leaves first.
func (s *Store) fillTree(ctx context.Context, d storeclient.Digest) error {
	if _, err := s.fast.GetDirectory(ctx, d); err == nil {
		return nil
	}
	byDigest := map[storeclient.Digest]*storeclient.Directory{}
	if tg, ok := s.slow.(treeGetter); ok {
		tree, err := tg.GetDirectoryTree(ctx, d)
		if err != nil {
			return err
		}
		for _, dir := range tree {
			byDigest[dir.Digest()] = dir
		}
	} else {
		queue := []storeclient.Digest{d}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			if _, done := byDigest[cur]; done {
				continue
			}
			dir, err := s.slow.GetDirectory(ctx, cur)
			if err != nil {
				return err
			}
			byDigest[cur] = dir
			for _, e := range dir.Entries() {
				if e.Node.Kind() != storeclient.KindDirectory {
					continue
				}
				if _, err := s.fast.GetDirectory(ctx, e.Node.Digest()); err == nil {
					continue // that subtree is cached already
				}
				queue = append(queue, e.Node.Digest())
			}
		}
	}
	// Put in post-order, so every child is stored before its parents.
	put := map[storeclient.Digest]bool{}
	var walk func(dg storeclient.Digest) error
	walk = func(dg storeclient.Digest) error {
		dir, ok := byDigest[dg]
		if !ok || put[dg] {
			return nil
		}
		put[dg] = true
		for _, e := range dir.Entries() {
			if e.Node.Kind() == storeclient.KindDirectory {
				if err := walk(e.Node.Digest()); err != nil {
					return err
				}
			}
		}
		if _, err := s.fast.PutDirectory(ctx, dir); err != nil {
			return fmt.Errorf("cache: fill directory %s: %w", dg, err)
		}
		return nil
	}
	if err := walk(d); err != nil {
		return err
	}
	s.log.Debug("cache: filled directory tree", "root", d.String(), "directories", len(byDigest))
	return nil
}

// PutDirectory implements storeclient.DirectoryService.
func (s *Store) PutDirectory(ctx context.Context, dir *storeclient.Directory) (storeclient.Digest, error) {
	d, err := s.slow.PutDirectory(ctx, dir)
	if err != nil {
		return d, err
	}
	if _, err := s.fast.PutDirectory(ctx, dir); err != nil {
		// The children may be only in the slow store; the fast one
		// fills on read.
		s.log.Debug("cache: directory not copied to the fast store", "digest", d.String(), "err", err)
	}
	return d, nil
}

// GetPathInfo implements storeclient.PathInfoService: the slow store is
// authoritative; the fast store answers only when the slow one fails with
// something other than not-found (an outage).
func (s *Store) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	v, err := s.shared(ctx, "pathinfo "+d.String(), func(fctx context.Context) (any, error) {
		p, err := s.slow.GetPathInfo(fctx, d)
		if err != nil {
			return nil, err
		}
		if err := s.fast.PutPathInfo(fctx, p); err != nil {
			s.log.Debug("cache: pathinfo not copied to the fast store", "path", p.StorePath.Basename(), "err", err)
		}
		return p, nil
	})
	if err == nil {
		return v.(*storeclient.PathInfo), nil
	}
	if errors.Is(err, storeclient.ErrNotFound) || ctx.Err() != nil {
		return nil, err
	}
	if fp, ferr := s.fast.GetPathInfo(ctx, d); ferr == nil {
		s.log.Warn("cache: slow store failed; serving the cached pathinfo", "path", fp.StorePath.Basename(), "err", err)
		return fp, nil
	}
	return nil, err
}

// PutPathInfo implements storeclient.PathInfoService.
func (s *Store) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	if err := s.slow.PutPathInfo(ctx, p); err != nil {
		return err
	}
	if err := s.fast.PutPathInfo(ctx, p); err != nil {
		s.log.Debug("cache: pathinfo not copied to the fast store", "path", p.StorePath.Basename(), "err", err)
	}
	return nil
}

// ListPathInfos implements storeclient.PathInfoService from the slow
// store.
func (s *Store) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return s.slow.ListPathInfos(ctx)
}

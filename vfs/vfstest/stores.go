package vfstest

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/storefs/storefs/storeclient"
)

// Untrusted hides a store's TrustedLocal method, so vfs verifies everything
// it reads from it.
func Untrusted(s storeclient.Store) storeclient.Store { return untrusted{s} }

type untrusted struct{ storeclient.Store }

// Missing makes the blobs and Directories with the given digests missing:
// the store answers ErrNotFound for them. The result is not trusted-local.
func Missing(s storeclient.Store, digests ...storeclient.Digest) storeclient.Store {
	m := make(map[storeclient.Digest]bool, len(digests))
	for _, d := range digests {
		m[d] = true
	}
	return &missing{Store: s, gone: m}
}

type missing struct {
	storeclient.Store
	gone map[storeclient.Digest]bool
}

func (m *missing) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	if m.gone[d] {
		return 0, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
	}
	return m.Store.StatBlob(ctx, d)
}

func (m *missing) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if m.gone[d] {
		return nil, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
	}
	return m.Store.OpenBlob(ctx, d)
}

func (m *missing) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	if m.gone[d] {
		return nil, fmt.Errorf("directory %s: %w", d, storeclient.ErrNotFound)
	}
	return m.Store.GetDirectory(ctx, d)
}

// Corrupt returns a store that answers wrong content for the given digests,
// without reporting any error, as a broken disk or a lying peer would: blobs
// come back with their first byte flipped, Directories as a different
// (empty) Directory. It is not trusted-local.
func Corrupt(s storeclient.Store, digests ...storeclient.Digest) storeclient.Store {
	m := make(map[storeclient.Digest]bool, len(digests))
	for _, d := range digests {
		m[d] = true
	}
	return &corrupt{Store: s, bad: m}
}

type corrupt struct {
	storeclient.Store
	bad map[storeclient.Digest]bool
}

func (c *corrupt) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := c.Store.OpenBlob(ctx, d)
	if err != nil || !c.bad[d] {
		return r, err
	}
	return flipReader{r}, nil
}

// flipReader flips every bit of the blob's first byte.
type flipReader struct{ storeclient.BlobReader }

func (f flipReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.BlobReader.ReadAt(p, off)
	if off == 0 && n > 0 {
		p[0] ^= 0xff
	}
	return n, err
}

func (c *corrupt) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	dir, err := c.Store.GetDirectory(ctx, d)
	if err != nil || !c.bad[d] {
		return dir, err
	}
	return storeclient.NewDirectory()
}

// WithDirectories returns a store that also serves dirs, bypassing the
// checks the backend does on upload — for Directories that record wrong
// child sizes. It is trusted-local if s is.
func WithDirectories(s storeclient.Store, dirs ...*storeclient.Directory) storeclient.Store {
	m := make(map[storeclient.Digest]*storeclient.Directory, len(dirs))
	for _, d := range dirs {
		m[d.Digest()] = d
	}
	return &extraDirs{Store: s, dirs: m}
}

type extraDirs struct {
	storeclient.Store
	dirs map[storeclient.Digest]*storeclient.Directory
}

func (e *extraDirs) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	if dir, ok := e.dirs[d]; ok {
		return dir, nil
	}
	return e.Store.GetDirectory(ctx, d)
}

// TrustedLocal implements storeclient.TrustedStore with the wrapped
// store's answer: the extra Directories are the test's own, and the rest
// is served as it is.
func (e *extraDirs) TrustedLocal() bool { return storeclient.IsTrustedLocal(e.Store) }

// ErrBackend is what a Failing store answers.
var ErrBackend = errors.New("vfstest: injected backend failure")

// Failing returns a store whose every read fails with ErrBackend (not
// ErrNotFound): a backend that is down.
func Failing(s storeclient.Store) storeclient.Store { return failing{s} }

type failing struct{ storeclient.Store }

func (failing) StatBlob(context.Context, storeclient.Digest) (int64, error) { return 0, ErrBackend }
func (failing) OpenBlob(context.Context, storeclient.Digest) (storeclient.BlobReader, error) {
	return nil, ErrBackend
}
func (failing) GetDirectory(context.Context, storeclient.Digest) (*storeclient.Directory, error) {
	return nil, ErrBackend
}
func (failing) GetPathInfo(context.Context, storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	return nil, ErrBackend
}
func (failing) ListPathInfos(context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) { yield(nil, ErrBackend) }
}

// Stall returns a store whose every read blocks until its context is done,
// then fails with the context's error: a backend that never answers. It is
// not trusted-local.
func Stall(s storeclient.Store) storeclient.Store { return stall{s} }

type stall struct{ storeclient.Store }

func (stall) StatBlob(ctx context.Context, _ storeclient.Digest) (int64, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}
func (stall) OpenBlob(ctx context.Context, _ storeclient.Digest) (storeclient.BlobReader, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (stall) GetDirectory(ctx context.Context, _ storeclient.Digest) (*storeclient.Directory, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (stall) GetPathInfo(ctx context.Context, _ storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (stall) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) {
		<-ctx.Done()
		yield(nil, ctx.Err())
	}
}

// StallReads returns a store that opens blobs normally but whose blob reads
// block until the reader is closed: a backend that stops answering in the
// middle of a file. It is not trusted-local.
func StallReads(s storeclient.Store) storeclient.Store { return stallReads{s} }

type stallReads struct{ storeclient.Store }

func (s stallReads) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := s.Store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	return &stalledReader{BlobReader: r, closed: make(chan struct{})}, nil
}

type stalledReader struct {
	storeclient.BlobReader
	once   sync.Once
	closed chan struct{}
}

func (s *stalledReader) ReadAt(p []byte, off int64) (int, error) {
	<-s.closed
	return 0, errors.New("vfstest: reader closed")
}

func (s *stalledReader) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.BlobReader.Close()
}

// Panicking returns a store that panics in every read call: a backend with
// a bug, or a damaged database whose library panics. trusted says whether
// it claims to be trusted-local (the read path differs).
func Panicking(s storeclient.Store, trusted bool) storeclient.Store {
	return panicking{Store: s, trusted: trusted}
}

type panicking struct {
	storeclient.Store
	trusted bool
}

func (p panicking) TrustedLocal() bool { return p.trusted }
func (panicking) StatBlob(context.Context, storeclient.Digest) (int64, error) {
	panic("vfstest: injected panic in StatBlob")
}
func (panicking) OpenBlob(context.Context, storeclient.Digest) (storeclient.BlobReader, error) {
	panic("vfstest: injected panic in OpenBlob")
}
func (panicking) GetDirectory(context.Context, storeclient.Digest) (*storeclient.Directory, error) {
	panic("vfstest: injected panic in GetDirectory")
}
func (panicking) GetPathInfo(context.Context, storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	panic("vfstest: injected panic in GetPathInfo")
}
func (panicking) ListPathInfos(context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) { panic("vfstest: injected panic in ListPathInfos") }
}

// PanickingReads returns a store that opens blobs normally but whose blob
// readers panic in ReadAt and Close. trusted says whether it claims to be
// trusted-local.
func PanickingReads(s storeclient.Store, trusted bool) storeclient.Store {
	return panickingReads{Store: s, trusted: trusted}
}

type panickingReads struct {
	storeclient.Store
	trusted bool
}

func (p panickingReads) TrustedLocal() bool { return p.trusted }
func (p panickingReads) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := p.Store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	return panickingReader{r}, nil
}

type panickingReader struct{ storeclient.BlobReader }

func (panickingReader) ReadAt([]byte, int64) (int, error) { panic("vfstest: injected panic in ReadAt") }
func (r panickingReader) Close() error {
	r.BlobReader.Close()
	panic("vfstest: injected panic in Close")
}

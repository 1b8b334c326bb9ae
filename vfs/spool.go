package vfs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/storefs/storefs/storeclient"
)

// spool keeps whole remote blobs that came without a bao outboard, in
// unlinked files of Options.SpoolDir. Such a blob can only be verified by
// hashing all of it, so it is fetched once, whole, hashed as it is written
// here, and served from here once its digest matched: one transfer, never a
// second unverified stream. Open Files hold their blob; blobs no File holds
// are dropped, least recently used first, to keep the spool within
// Options.SpoolSize. The files are unlinked at creation, so nothing is left
// on disk when the process ends, whatever the way.
type spool struct {
	dir   string
	limit int64

	mu      sync.Mutex
	used    int64 // bytes of every spooled blob, held or not
	blobs   map[storeclient.Digest]*spooledBlob
	idle    *list.List // blobs no File holds; front: most recently released
	pending int64      // bytes reserved by fetches under way
	flight  singleflight.Group
}

// spooledBlob is one verified blob in the spool.
type spooledBlob struct {
	d    storeclient.Digest
	f    *os.File
	size int64
	refs int
	idle *list.Element // in spool.idle when refs == 0
}

func newSpool(dir string, limit int64) *spool {
	return &spool{dir: dir, limit: limit, blobs: make(map[storeclient.Digest]*spooledBlob), idle: list.New()}
}

// errSpoolFull says a blob does not fit beside the blobs open Files hold.
var errSpoolFull = errors.New("the spool for remote blobs without a bao outboard is full")

// acquire returns blob d held for a File, fetching it with fetch (which
// writes the blob's verified bytes into w and fails if they do not hash to
// d) when it is not spooled. Concurrent acquires of one blob share one
// fetch.
func (s *spool) acquire(ctx context.Context, d storeclient.Digest, size int64, fetch func(ctx context.Context, w io.Writer) error) (*spooledBlob, error) {
	for range 3 { // a blob spooled for us may be dropped before we take it
		if b := s.hold(d); b != nil {
			return b, nil
		}
		_, err := shared(ctx, &s.flight, string(d[:]), func(ctx context.Context) (any, error) {
			return nil, s.fill(ctx, d, size, fetch)
		})
		if err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("blob %s: %w (it was dropped as soon as it was fetched)", d, errSpoolFull)
}

// hold takes a reference to blob d if it is spooled.
func (s *spool) hold(d storeclient.Digest) *spooledBlob {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	if b == nil {
		return nil
	}
	if b.refs == 0 {
		s.idle.Remove(b.idle)
		b.idle = nil
	}
	b.refs++
	return b
}

// release drops a File's reference; an unheld blob stays spooled until
// room is needed.
func (s *spool) release(b *spooledBlob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b.refs--
	if b.refs == 0 {
		b.idle = s.idle.PushFront(b)
		s.shrink(0)
	}
}

// fill fetches blob d into a new spool file.
func (s *spool) fill(ctx context.Context, d storeclient.Digest, size int64, fetch func(ctx context.Context, w io.Writer) error) error {
	if b := s.hold(d); b != nil { // spooled by a fill that just ended
		s.release(b)
		return nil
	}
	if err := s.reserve(size); err != nil {
		return fmt.Errorf("blob %s of %d bytes: %w", d, size, err)
	}
	reserved := true
	defer func() {
		if reserved {
			s.mu.Lock()
			s.pending -= size
			s.mu.Unlock()
		}
	}()
	f, err := os.CreateTemp(s.dir, "storefs-spool-*")
	if err != nil {
		return fmt.Errorf("spool blob %s: %w", d, err)
	}
	// Unlinked at once: the file lives as long as it is open.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("spool blob %s: %w", d, err)
	}
	if err := fetch(ctx, f); err != nil {
		f.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending -= size
	reserved = false
	b := &spooledBlob{d: d, f: f, size: size}
	b.idle = s.idle.PushFront(b)
	s.blobs[d] = b
	s.used += size
	return nil
}

// reserve makes room for size bytes, dropping unheld blobs, or fails.
func (s *spool) reserve(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shrink(size)
	if s.used+s.pending+size > s.limit {
		return fmt.Errorf("%w: %d of %d bytes are held by open files or fetches (store.spool_size)", errSpoolFull, s.used+s.pending, s.limit)
	}
	s.pending += size
	return nil
}

// shrink drops unheld blobs, least recently released first, until room
// bytes more would fit. s.mu is held.
func (s *spool) shrink(room int64) {
	for s.used+s.pending+room > s.limit && s.idle.Len() > 0 {
		b := s.idle.Remove(s.idle.Back()).(*spooledBlob)
		delete(s.blobs, b.d)
		s.used -= b.size
		b.f.Close()
	}
}

// setLimit changes the bound, dropping unheld blobs if it shrinks.
func (s *spool) setLimit(limit int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = limit
	s.shrink(0)
}

// usage returns the bytes spooled and the bound.
func (s *spool) usage() (used, limit int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.limit
}

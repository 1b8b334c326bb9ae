package vfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// blobSource is where an open File's bytes come from, each kind verified
// its own way: a trusted store's reader as it is, a remote blob per chunk
// group through its bao outboard, a remote blob without one from the spool.
type blobSource interface {
	// readAt fills p from off; p lies within the blob. Fewer bytes come
	// only with an error.
	readAt(p []byte, off int64) (int, error)
	// file returns a local file holding the blob's verified bytes from
	// the returned offset on, if there is one (see ReadResult).
	file() (*os.File, int64, bool)
	close() error
}

// openSource opens blob d of size bytes (size > 0) for reading.
func (f *FS) openSource(ctx context.Context, d storeclient.Digest, size int64) (blobSource, error) {
	if f.trusted {
		r, err := f.openBlob(ctx, d, size)
		if err != nil {
			return nil, err
		}
		src := &trustedSource{f: f.fsState, r: r}
		src.local, src.base, src.hasLocal = src.localFile(d, size)
		return src, nil
	}
	ob, err := f.outboard(ctx, d, size)
	if errors.Is(err, storeclient.ErrNoOutboard) {
		return f.spooled(ctx, d, size)
	}
	if err != nil {
		return nil, err
	}
	f.opened(d, 1)
	return &baoSource{f: f, d: d, ob: ob}, nil
}

// openBlob opens blob d in the store, bounded by the timeout; an
// untrusted store's reader also gets every ReadAt bounded.
func (f *FS) openBlob(ctx context.Context, d storeclient.Digest, size int64) (storeclient.BlobReader, error) {
	octx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	tb := f.backendStart()
	br, err := storeCall(f.fsState, BackendOpenBlob, func() (storeclient.BlobReader, error) {
		return storeclient.OpenBlobSized(octx, f.store, d, size)
	})
	f.backendEnd(BackendOpenBlob, tb, err)
	if err != nil {
		f.blobFailed(d, err)
		return nil, backendError("open", d.String(), err)
	}
	if br.Size() != size {
		f.closeStore(br)
		return nil, f.corrupt("open", d, fmt.Errorf("blob has %d bytes, the node records %d", br.Size(), size))
	}
	if f.trusted {
		return br, nil
	}
	if cr, ok := br.(storeclient.ContextReaderAt); ok {
		return &deadlineReader{BlobReader: br, cr: cr, timeout: f.opts.Timeout}, nil
	}
	return &boundedReader{r: br, timeout: f.opts.Timeout}, nil
}

// corrupt logs corrupt content (once a minute per blob) and returns its
// EIO error.
func (f *fsState) corrupt(op string, d storeclient.Digest, cause error) error {
	err := fmt.Errorf("%w: %w", storeclient.ErrCorrupt, cause)
	f.blobFailed(d, err)
	return backendError(op, d.String(), err)
}

// blobFailed logs why blob d could not be served: one line per blob and
// kind of failure a minute, so a client retrying a bad blob does not flood
// the log.
func (f *fsState) blobFailed(d storeclient.Digest, err error) {
	kind, msg := "backend", "vfs: blob read failed"
	switch {
	case errors.Is(err, storeclient.ErrCorrupt):
		kind, msg = "corrupt", "vfs: corrupt blob"
	case errors.Is(err, context.Canceled):
		return // the caller gave up; nothing is wrong
	case errors.Is(err, context.DeadlineExceeded):
		kind = "timeout"
	}
	if f.firstReport(kind + string(d[:])) {
		f.log.Error(msg, "digest", d.String(), "store", f.storeName, "err", err)
	}
}

// firstReport reports whether the failure named key was not logged in the
// last minute, and notes it as logged now.
func (f *fsState) firstReport(key string) bool {
	now := time.Now()
	f.reportedMu.Lock()
	defer f.reportedMu.Unlock()
	if last, seen := f.reported.Get(key); seen && now.Sub(last) < time.Minute {
		return false
	}
	f.reported.Add(key, now)
	return true
}

// metadataFailed logs why a Directory or PathInfo (what, named by name)
// could not be read from a store that failed (an error, a timeout), once
// a minute each: the frontends answer EIO, and the log says why. Not
// logged: a caller that gave up, corruption (logged where it is found),
// and an absent object, which anyone who can send a forged handle could
// otherwise make us log.
func (f *fsState) metadataFailed(what, name string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, storeclient.ErrCorrupt) || errors.Is(err, storeclient.ErrNotFound) {
		return
	}
	if f.firstReport(what + name) {
		f.log.Error("vfs: "+what+" read failed", "name", name, "store", f.storeName, "err", err)
	}
}

// outboard returns the checked bao outboard of remote blob d, or an error
// wrapping storeclient.ErrNoOutboard when the store has none. A blob of at
// most one chunk group needs nothing from the store: its outboard is its
// length, and its one group is checked against its digest.
func (f *FS) outboard(ctx context.Context, d storeclient.Digest, size int64) (*storeclient.Outboard, error) {
	if size <= storeclient.BaoGroupSize {
		enc := binary.LittleEndian.AppendUint64(nil, uint64(size))
		return storeclient.ParseOutboard(d, size, enc)
	}
	key := "o" + string(d[:])
	if ob, ok := f.remote.get(key); ok {
		f.cacheLookup(CacheOutboard, true)
		return ob.(*storeclient.Outboard), nil
	}
	f.cacheLookup(CacheOutboard, false)
	if storeclient.OutboardSize(size) > storeclient.MaxOutboardSize {
		return nil, fmt.Errorf("blob %s of %d bytes: %w (larger than any outboard)", d, size, storeclient.ErrNoOutboard)
	}
	v, err := shared(ctx, &f.remoteFlight, key, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
		defer cancel()
		t0 := f.backendStart()
		enc, err := storeCall(f.fsState, BackendBlobOutboard, func() ([]byte, error) { return storeclient.BlobOutboard(ctx, f.store, d) })
		f.backendEnd(BackendBlobOutboard, t0, err)
		if err != nil {
			return nil, err
		}
		ob, err := storeclient.ParseOutboard(d, size, enc)
		if err != nil {
			return nil, err
		}
		f.remote.add(key, ob, int64(len(enc)))
		return ob, nil
	})
	switch {
	case errors.Is(err, storeclient.ErrNoOutboard):
		return nil, err
	case errors.Is(err, storeclient.ErrCorrupt):
		return nil, f.corrupt("open", d, err)
	case err != nil:
		f.blobFailed(d, err)
		return nil, backendError("open", d.String(), err)
	}
	return v.(*storeclient.Outboard), nil
}

// spooled returns remote blob d, which has no outboard, from the spool,
// fetching it whole first if it is not there.
func (f *FS) spooled(ctx context.Context, d storeclient.Digest, size int64) (blobSource, error) {
	b, err := f.spool.acquire(ctx, d, size, func(ctx context.Context, w io.Writer) error {
		return f.fetchWhole(ctx, d, size, w)
	})
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) {
			return nil, err
		}
		f.blobFailed(d, err)
		return nil, backendError("open", d.String(), err)
	}
	return &spoolSource{s: f.spool, b: b}, nil
}

// fetchChunk is how much of a blob one read of a whole-blob fetch asks for.
const fetchChunk = 1 << 20

// fetchWhole streams blob d into w, hashing it, and fails unless it hashes
// to d. Every read is bounded by the timeout.
func (f *FS) fetchWhole(ctx context.Context, d storeclient.Digest, size int64, w io.Writer) error {
	r, err := f.openBlob(ctx, d, size)
	if err != nil {
		return err
	}
	defer f.closeStore(r)
	h := storeclient.NewHasher()
	buf := make([]byte, min(fetchChunk, size))
	for off := int64(0); off < size; {
		p := buf[:min(int64(len(buf)), size-off)]
		n, err := f.readStore(r, p, off)
		if n == len(p) {
			err = nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return f.corrupt("open", d, fmt.Errorf("blob ends at %d of %d bytes", off+int64(n), size))
			}
			f.blobFailed(d, err)
			return backendError("open", d.String(), err)
		}
		h.Write(p)
		if _, err := w.Write(p); err != nil {
			return backendError("open", d.String(), fmt.Errorf("spool: %w", err))
		}
		off += int64(n)
	}
	if got := storeclient.Digest(h.Sum(nil)); got != d {
		return f.corrupt("open", d, fmt.Errorf("content hashes to %s", got))
	}
	return nil
}

// trustedSource reads a trusted-local store's blob as it is.
type trustedSource struct {
	f *fsState
	r storeclient.BlobReader
	// local is the file holding the blob from base, when the reader has
	// one that is long enough.
	local    *os.File
	base     int64
	hasLocal bool
}

func (s *trustedSource) readAt(p []byte, off int64) (int, error) {
	return s.f.readStore(s.r, p, off)
}

func (s *trustedSource) close() error { return s.f.closeStore(s.r) }

// blobFile is implemented by the readers of stores that keep each blob as
// the range [FileOffset(), FileOffset()+Size()) of a local file (the
// embedded store: a blob file of its own at offset 0, or a range of a
// pack). The file belongs to the reader.
type blobFile interface {
	File() *os.File
	FileOffset() int64
}

func (s *trustedSource) file() (*os.File, int64, bool) { return s.local, s.base, s.hasLocal }

// localFile finds the reader's blob file. A file shorter than the blob's
// end (damaged on disk) is not offered: reads through the reader answer
// that with EIO, where the kernel would stop short in the middle of a
// reply.
func (s *trustedSource) localFile(d storeclient.Digest, size int64) (*os.File, int64, bool) {
	bf, isFile := s.r.(blobFile)
	if !isFile || bf.File() == nil {
		return nil, 0, false
	}
	f, off := bf.File(), bf.FileOffset()
	fi, err := f.Stat()
	if err != nil || fi.Size() < off+size {
		s.f.log.Warn("vfs: blob file shorter than its blob; reading it through vfs", "blob", d.String(), "file", f.Name(), "offset", off, "size", size, "err", err)
		return nil, 0, false
	}
	return f, off, true
}

// spoolSource reads a remote blob verified whole into the spool.
type spoolSource struct {
	s    *spool
	b    *spooledBlob
	once sync.Once
}

func (s *spoolSource) readAt(p []byte, off int64) (int, error) { return s.b.f.ReadAt(p, off) }

func (s *spoolSource) file() (*os.File, int64, bool) { return s.b.f, 0, true }

func (s *spoolSource) close() error {
	s.once.Do(func() { s.s.release(s.b) })
	return nil
}

// baoSource reads a remote blob through its bao outboard: every read asks
// the store for the whole chunk groups it touches, checks them against the
// outboard, and keeps them in the FS's verified-group cache, which every
// File of the blob shares. Bytes leave only after their group verified.
// The store's reader is opened at the first group not in the cache, so an
// open of a blob whose groups are cached costs nothing.
type baoSource struct {
	f  *FS
	d  storeclient.Digest
	ob *storeclient.Outboard

	mu     sync.Mutex
	r      storeclient.BlobReader
	closed bool

	fetchMu sync.Mutex
	next    int64 // where the File's last fetch ended
}

func (s *baoSource) file() (*os.File, int64, bool) { return nil, 0, false }

func (s *baoSource) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.f.opened(s.d, -1)
	}
	s.closed = true
	if s.r == nil {
		return nil
	}
	return s.f.closeStore(s.r)
}

// reader returns the store's reader of the blob, opening it if needed.
func (s *baoSource) reader() (storeclient.BlobReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("blob %s: read after close", s.d)
	}
	if s.r == nil {
		r, err := s.f.openBlob(context.Background(), s.d, s.ob.Size())
		if err != nil {
			return nil, err
		}
		s.r = r
	}
	return s.r, nil
}

// groupKey names chunk group at off of blob d in the verified-group cache.
func groupKey(d storeclient.Digest, off int64) string {
	return "g" + string(binary.BigEndian.AppendUint64(d[:], uint64(off)))
}

func (s *baoSource) readAt(p []byte, off int64) (int, error) {
	start, end := s.ob.GroupSpan(off, int64(len(p)))
	if start == off && end == off+int64(len(p)) {
		// Whole groups: read and verified in p itself, unless the first
		// is cached.
		done, err := s.fetchInto(p, start)
		if err != nil {
			return 0, err
		}
		if done {
			return len(p), nil
		}
	}
	n := 0
	for g := start; g < end; {
		data, ok := s.f.remote.get(groupKey(s.d, g))
		s.f.cacheLookup(CacheVerifiedGroup, ok)
		var run []byte
		if ok {
			run = data.([]byte)
		} else {
			// Fetch every missing group up to the next cached one in
			// one read.
			stop := g + storeclient.BaoGroupSize
			for stop < end && !s.f.remote.contains(groupKey(s.d, stop)) {
				stop += storeclient.BaoGroupSize
			}
			stop = min(stop, s.ob.Size())
			var err error
			if run, err = s.fetchInOrder(g, stop); err != nil {
				return n, err
			}
			if run == nil {
				continue // fetched meanwhile by another read: from the cache
			}
		}
		// run holds verified bytes from g; copy what p wants of them.
		lo := max(off, g)
		hi := min(off+int64(len(p)), g+int64(len(run)))
		n += copy(p[lo-off:hi-off], run[lo-g:hi-g])
		g += int64(len(run))
	}
	return n, nil
}

// maxGapFill is how far past the end of a File's last fetch a fetch may
// start and still be made from there: the groups in between are fetched
// and cached too, rather than skipped. Kernels send a file's readahead as
// concurrent reads that arrive out of order; fetched in order, the store's
// one stream serves them without being reopened behind its position, so
// each byte is transferred once.
const maxGapFill = 1 << 20

// fetchInOrder fetches groups [start, stop) for a read, one fetch of the
// File at a time, in stream order (see maxGapFill). It returns the verified
// bytes from start, or nil if another read fetched start meanwhile.
func (s *baoSource) fetchInOrder(start, stop int64) ([]byte, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	if s.f.remote.contains(groupKey(s.d, start)) {
		return nil, nil
	}
	from := start
	if s.next < start && start-s.next <= maxGapFill {
		from = s.next
	}
	run, err := s.fetch(from, stop)
	if err != nil {
		return nil, err
	}
	s.next = stop
	return run[start-from:], nil
}

// stallMemory is how long a blob whose backend did not answer in time
// fails its reads at once: the kernel retries a failed read right away, and
// the caller should get its error within the timeout, not twice that.
const stallMemory = time.Second

// fetch reads and verifies groups [start, stop) into a buffer of their
// own, once for every File that asks for the same run at the same time,
// and caches them all.
func (s *baoSource) fetch(start, stop int64) ([]byte, error) {
	key := groupKey(s.d, start) + string(binary.BigEndian.AppendUint64(nil, uint64(stop)))
	v, err := shared(context.Background(), &s.f.remoteFlight, key, func(context.Context) (any, error) {
		buf := make([]byte, stop-start)
		if err := s.load(buf, start); err != nil {
			return nil, err
		}
		s.cache(buf, start, true)
		return buf, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// fetchInto reads and verifies whole groups from start straight into dst,
// which a read wants whole, in stream order (see maxGapFill), and reports
// whether it did: not if the first group is cached. It caches
// the first and last group, which unaligned reads next to this one want
// too, and every group while other Files of the blob are open.
func (s *baoSource) fetchInto(dst []byte, start int64) (bool, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	if s.f.remote.contains(groupKey(s.d, start)) {
		return false, nil // perhaps by the fetch this one waited for
	}
	if s.next < start && start-s.next <= maxGapFill {
		if _, err := s.fetch(s.next, start); err != nil {
			return false, err
		}
	}
	if err := s.load(dst, start); err != nil {
		return false, err
	}
	s.next = start + int64(len(dst))
	s.cache(dst, start, s.f.openCount(s.d) > 1)
	return true, nil
}

// load reads groups at start into dst from the store and verifies them.
func (s *baoSource) load(dst []byte, start int64) error {
	if at, ok := s.f.stalled.Get(s.d); ok && time.Since(at) < stallMemory {
		return fmt.Errorf("blob %s: the backend did not answer in time %v ago: %w", s.d, time.Since(at).Round(time.Millisecond), context.DeadlineExceeded)
	}
	r, err := s.reader()
	if err != nil {
		return err
	}
	n, err := s.f.readStore(r, dst, start)
	if n == len(dst) {
		err = nil
	} else if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("blob ended at %d of %d bytes: %w", start+int64(n), s.ob.Size(), storeclient.ErrCorrupt)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			s.f.stalled.Add(s.d, time.Now())
		}
		s.f.blobFailed(s.d, err)
		return err
	}
	if err := s.ob.Verify(dst, start); err != nil {
		s.f.blobFailed(s.d, err)
		return err
	}
	return nil
}

// cache keeps the verified groups of data (from start) in the FS's
// verified-group cache: all of them, or only the first and the last. Each
// in memory of its own: a slice of data would keep all of it alive while
// any one group stays cached, or be overwritten (data may be a caller's
// buffer).
func (s *baoSource) cache(data []byte, start int64, all bool) {
	stop := start + int64(len(data))
	for g := start; g < stop; g += storeclient.BaoGroupSize {
		e := min(g+storeclient.BaoGroupSize, stop)
		if all || g == start || e == stop {
			s.f.remote.add(groupKey(s.d, g), bytes.Clone(data[g-start:e-start]), e-g)
		}
	}
}

// opened counts the open Files of remote blob d (delta +1 or -1).
func (f *fsState) opened(d storeclient.Digest, delta int) {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	if n := f.open[d] + delta; n > 0 {
		f.open[d] = n
	} else {
		delete(f.open, d)
	}
}

// openCount returns how many Files of remote blob d are open.
func (f *fsState) openCount(d storeclient.Digest) int {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	return f.open[d]
}

// deadlineReader bounds each ReadAt of a reader that takes a context.
type deadlineReader struct {
	storeclient.BlobReader
	cr      storeclient.ContextReaderAt
	timeout time.Duration
}

func (r *deadlineReader) ReadAt(p []byte, off int64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	n, err := r.cr.ReadAtContext(ctx, p, off)
	if err != nil && ctx.Err() != nil {
		// The store's error may not say it was our deadline.
		err = fmt.Errorf("blob read at %d: %w (%v)", off, ctx.Err(), err)
	}
	return n, err
}

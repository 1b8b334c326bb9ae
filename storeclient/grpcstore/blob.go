package grpcstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/zeebo/blake3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
)

// putChunkSize is the largest BlobChunk an upload sends.
const putChunkSize = 1 << 20

// maxSkip is how far ahead a reader reads and discards instead of
// re-opening the stream at the offset, when the server supports offsets.
const maxSkip = 1 << 20

// maxChunks is the longest chunk list of Stat a reader keeps (48 bytes a
// chunk).
const maxChunks = 4096

// maxReadMessage bounds a message of a Read stream, which a reader holds
// until it has consumed it: storefs sends 256 KiB, and upstream servers
// (tonic) stay under the 4 MiB their own clients accept by default.
const maxReadMessage = 4 << 20

// segment is a part of a blob that can be read on its own: the whole blob,
// or one chunk of it as listed by Stat.
type segment struct {
	off, size int64
	digest    storeclient.Digest
}

// statSlack is what a Stat answer may carry besides an outboard.
const statSlack = 16 << 20

// stat asks about a blob: its chunks and, with withOutboard, its bao
// outboard. It returns the segments, or nil segments when the server lists
// none (the size is then unknown), and remembers what it learned.
func (s *Store) stat(ctx context.Context, d storeclient.Digest, withOutboard bool) ([]segment, []byte, error) {
	var resp *castorepb.StatBlobResponse
	op := "stat blob " + d.String()
	req := &castorepb.StatBlobRequest{Digest: d[:], SendChunks: true, SendBao: withOutboard}
	opts := []grpc.CallOption{}
	if withOutboard {
		opts = append(opts, grpc.MaxCallRecvMsgSize(storeclient.MaxOutboardSize+statSlack))
	}
	err := s.call(ctx, op, true, func(ctx context.Context, pkg grpc.CallOption) error {
		var err error
		resp, err = s.blobs.Stat(ctx, req, append(opts, pkg)...)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	segs, err := chunkSegments(d, resp.GetChunks())
	if err != nil {
		return nil, nil, fmt.Errorf("grpc store %s: %s: %w", s.target, op, err)
	}
	bao := resp.GetBao()
	if segs != nil || (withOutboard && len(bao) == 0) {
		s.known.update(d, func(info *blobInfo) {
			if segs != nil {
				last := segs[len(segs)-1]
				info.size = last.off + last.size
				info.segs = nil
				if len(segs) > 1 {
					info.segs = segs
				}
			}
			if withOutboard && len(bao) == 0 {
				info.noOutboard = time.Now()
			}
		})
	}
	return segs, bao, nil
}

// chunkSegments checks the chunk list of blob d and returns its segments,
// or nil if the list is empty.
func chunkSegments(d storeclient.Digest, chunks []*castorepb.StatBlobResponse_ChunkMeta) ([]segment, error) {
	if len(chunks) == 0 {
		return nil, nil
	}
	// The list is only a way to seek: a longer one than a reader
	// should hold is summed, and the blob read as one segment.
	keep := len(chunks) <= maxChunks
	var segs []segment
	if keep {
		segs = make([]segment, 0, len(chunks))
	}
	var off int64
	for i, c := range chunks {
		cd, err := storeclient.DigestFromBytes(c.GetDigest())
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, errors.Join(storeclient.ErrCorrupt, err))
		}
		size := int64(c.GetSize())
		if size < 0 || off+size < off || (size == 0 && len(chunks) > 1) {
			return nil, fmt.Errorf("chunk %d has size %d: %w", i, c.GetSize(), storeclient.ErrCorrupt)
		}
		if keep {
			segs = append(segs, segment{off: off, size: size, digest: cd})
		}
		off += size
	}
	if !keep {
		segs = []segment{{size: off, digest: d}}
	}
	if len(segs) == 1 && (segs[0].digest != d || (segs[0].size == 0) != (d == storeclient.EmptyDigest)) {
		return nil, fmt.Errorf("its only chunk is %s of %d bytes: %w", segs[0].digest, segs[0].size, storeclient.ErrCorrupt)
	}
	return segs, nil
}

// BlobOutboard implements storeclient.OutboardStore: it asks Stat for the
// blob's bao outboard (and its chunks, which it remembers, so that opening
// the blob next needs no Stat). A server that sends none (tvix/snix today)
// gives an error wrapping storeclient.ErrNoOutboard, and is not asked about
// the same blob again for a minute. The outboard is passed on unchecked
// but for its length: the caller checks it with storeclient.ParseOutboard.
func (s *Store) BlobOutboard(ctx context.Context, d storeclient.Digest) ([]byte, error) {
	if info, ok := s.known.get(d); ok && !info.noOutboard.IsZero() && time.Since(info.noOutboard) < noOutboardTTL {
		return nil, fmt.Errorf("grpc store %s: blob %s: the server sent %w for it %s ago", s.target, d, storeclient.ErrNoOutboard, time.Since(info.noOutboard).Round(time.Second))
	}
	_, bao, err := s.stat(ctx, d, true)
	if err != nil {
		return nil, err
	}
	switch {
	case len(bao) == 0:
		return nil, fmt.Errorf("grpc store %s: blob %s: the server sent %w", s.target, d, storeclient.ErrNoOutboard)
	case len(bao) > storeclient.MaxOutboardSize:
		return nil, fmt.Errorf("grpc store %s: blob %s: the server sent an outboard of %d bytes, more than %d: %w", s.target, d, len(bao), storeclient.MaxOutboardSize, storeclient.ErrCorrupt)
	}
	return bao, nil
}

// StatBlob implements storeclient.BlobService. It always asks the server
// (the answer says whether the blob exists); when the server lists no
// chunks, the size is one learned before, or measured by streaming the
// blob once (and remembered).
func (s *Store) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	segs, err := s.segments(ctx, d)
	if err != nil {
		return 0, err
	}
	last := segs[len(segs)-1]
	return last.off + last.size, nil
}

// segments asks about a blob and returns its readable parts, measuring
// its size if neither the server nor the cache says it.
func (s *Store) segments(ctx context.Context, d storeclient.Digest) ([]segment, error) {
	segs, _, err := s.stat(ctx, d, false)
	if err != nil || segs != nil {
		return segs, err
	}
	if d == storeclient.EmptyDigest {
		return []segment{{digest: d}}, nil
	}
	if info, ok := s.known.get(d); ok && info.size >= 0 {
		return info.segments(d), nil
	}
	n, err := s.measure(ctx, d)
	if err != nil {
		return nil, err
	}
	s.known.update(d, func(info *blobInfo) { info.size = n })
	return []segment{{size: n, digest: d}}, nil
}

// segments returns the segments of blob d the entry describes; its size
// must be known.
func (info blobInfo) segments(d storeclient.Digest) []segment {
	if info.segs != nil {
		return info.segs
	}
	return []segment{{size: info.size, digest: d}}
}

// measureStep is how many bytes of a blob being measured must arrive
// within each timeout: a server that trickles is cut, one that is merely
// slow is not.
const measureStep = 1 << 20

// measure streams a whole blob to learn its length, checking its digest.
// Opening the stream is a call with one deadline; after that, each
// measureStep bytes get their own.
func (s *Store) measure(ctx context.Context, d storeclient.Digest) (int64, error) {
	var n int64
	err := s.call(ctx, "measure blob "+d.String(), true, func(cctx context.Context, pkg grpc.CallOption) error {
		st, err := s.openRead(ctx, cctx, d, 0, 0, pkg)
		if err != nil {
			return err
		}
		defer st.close()
		st.unwatch()
		n = 0
		for {
			step, err := s.measureStep(ctx, st)
			n += step
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if got := storeclient.Digest(st.hasher.Sum(nil)); got != d {
			return fmt.Errorf("blob %s: the server sent bytes hashing to %s: %w", d, got, storeclient.ErrCorrupt)
		}
		return nil
	})
	return n, err
}

// measureStep receives up to measureStep bytes of st within the timeout.
func (s *Store) measureStep(ctx context.Context, st *readStream) (int64, error) {
	sctx, cancel := s.within(ctx)
	defer cancel()
	st.watch(sctx)
	defer st.unwatch()
	var n int64
	for n < measureStep {
		b, err := st.recv()
		n += int64(len(b))
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// OpenBlob implements storeclient.BlobService. It asks the server about
// the blob unless it knows its size already (see StatBlob).
func (s *Store) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	var segs []segment
	if info, ok := s.known.get(d); ok && info.size >= 0 {
		segs = info.segments(d)
	} else {
		var err error
		if segs, err = s.segments(ctx, d); err != nil {
			return nil, err
		}
	}
	last := segs[len(segs)-1]
	return s.newBlobReader(d, segs, last.off+last.size, true), nil
}

var _ storeclient.SizedBlobOpener = (*Store)(nil)

// OpenBlobSized implements storeclient.SizedBlobOpener: it opens blob d, of
// size bytes, without a call. The reader streams from the start or, when
// the server supports the offset extension, from any offset; only on a
// server without it, and for a read far from the start, does it ask Stat
// for chunks to seek to. A server whose stream or chunk list turns out
// shorter or longer than size fails the read with an error wrapping
// storeclient.ErrCorrupt, as does one whose bytes from the start to the
// end do not hash to d.
func (s *Store) OpenBlobSized(ctx context.Context, d storeclient.Digest, size int64) (storeclient.BlobReader, error) {
	switch {
	case size < 0:
		return nil, fmt.Errorf("grpc store %s: open blob %s: negative size %d", s.target, d, size)
	case (size == 0) != (d == storeclient.EmptyDigest):
		return nil, fmt.Errorf("grpc store %s: open blob %s: %d bytes cannot have this digest: %w", s.target, d, size, storeclient.ErrCorrupt)
	}
	if info, ok := s.known.get(d); ok && info.size >= 0 {
		if info.size != size {
			return nil, fmt.Errorf("grpc store %s: open blob %s: the server said it has %d bytes, %d expected: %w", s.target, d, info.size, size, storeclient.ErrCorrupt)
		}
		return s.newBlobReader(d, info.segments(d), size, true), nil
	}
	return s.newBlobReader(d, []segment{{size: size, digest: d}}, size, false), nil
}

// readStream is one open Read stream of a segment.
type readStream struct {
	*liveStream
	stream  grpc.ServerStreamingClient[castorepb.BlobChunk]
	limit   int64  // where the server ends the stream (the length extension); 0: the segment's end
	pos     int64  // segment offset of pending[0]
	pending []byte // received, not yet consumed
	hasher  *blake3.Hasher
}

// openRead opens a Read stream of digest d starting at off (0 or, with
// the offset extension, any offset) and, if length > 0, asks the server to
// end it length bytes later (the length extension). The returned stream's
// pos says where it really starts, its limit where the server ends it.
// The stream lives until parent ends or it is closed; it is watched by ctx
// (see liveStream) until the caller unwatches it.
func (s *Store) openRead(parent, ctx context.Context, d storeclient.Digest, off, length int64, pkg grpc.CallOption) (*readStream, error) {
	st := &readStream{liveStream: newLiveStream(parent)}
	st.watch(ctx)
	octx := st.ctx
	askOffset := (off > 0 || length > 0) && s.offsetReads.Load() >= 0
	if askOffset {
		octx = metadata.AppendToOutgoingContext(octx, castorepb.ReadOffsetMetadata, strconv.FormatInt(off, 10))
		if length > 0 {
			octx = metadata.AppendToOutgoingContext(octx, castorepb.ReadLengthMetadata, strconv.FormatInt(length, 10))
		}
	}
	stream, err := s.blobs.Read(octx, &castorepb.ReadBlobRequest{Digest: d[:]}, pkg, grpc.MaxCallRecvMsgSize(maxReadMessage))
	if err != nil {
		st.close()
		return nil, st.explain(err)
	}
	st.stream = stream
	if askOffset {
		hdr, err := stream.Header()
		if err != nil {
			st.close()
			return nil, st.explain(err)
		}
		if v := hdr.Get(castorepb.ReadOffsetMetadata); len(v) == 1 && v[0] == strconv.FormatInt(off, 10) {
			st.pos = off
			s.offsetReads.Store(1)
			if v := hdr.Get(castorepb.ReadLengthMetadata); length > 0 && len(v) == 1 && v[0] == strconv.FormatInt(length, 10) {
				st.limit = off + length
			}
		} else {
			s.offsetReads.Store(-1)
		}
	}
	if st.pos == 0 {
		// Streamed from the start: the bytes can be checked at the end.
		st.hasher = storeclient.NewHasher()
	}
	// Surface NOT_FOUND or UNIMPLEMENTED now, while the call can still be
	// retried or redirected to the other package.
	if err := st.fill(); err != nil && err != io.EOF {
		st.close()
		return nil, err
	}
	return st, nil
}

// fill receives the next message if nothing is pending.
func (st *readStream) fill() error {
	for len(st.pending) == 0 {
		msg, err := st.stream.Recv()
		if err != nil {
			if err == io.EOF {
				return err
			}
			return st.explain(err)
		}
		st.pending = msg.GetData()
		if st.hasher != nil {
			st.hasher.Write(st.pending)
		}
	}
	return nil
}

// recv returns the next bytes of the stream, or io.EOF at its end.
func (st *readStream) recv() ([]byte, error) {
	if err := st.fill(); err != nil {
		return nil, err
	}
	b := st.pending
	st.pos += int64(len(b))
	st.pending = nil
	return b, nil
}

// blobReader is a storeclient.BlobReader over Read streams.
type blobReader struct {
	s      *Store
	digest storeclient.Digest
	size   int64

	// ctx is cancelled by Close, which cuts the stream of a ReadAt in
	// progress instead of waiting for it.
	ctx    context.Context
	cancel context.CancelFunc
	// lock is held by one ReadAt at a time. A channel, so that waiting
	// for it counts against the deadline of the ReadAt that waits.
	lock chan struct{}

	// Guarded by lock.
	segs        []segment
	chunksKnown bool // segs is what Stat said, or Stat was asked
	cur         *readStream
	curSeg      int
	cache       []window
	tick        uint64
	closed      bool
	// readEnd is where the ReadAt under way ends (blob offset); lastLimit
	// where the last length-limited stream ended (segment offset, in
	// segment lastSeg) and ahead how much the next stream asks for when
	// it continues there (see streamLength).
	readEnd   int64
	lastLimit int64
	lastSeg   int
	ahead     int64
}

type window struct {
	seg  int
	idx  int64
	data []byte
	used uint64
}

// newBlobReader returns a reader of segs; chunksKnown says whether the
// server was asked for chunks already.
func (s *Store) newBlobReader(d storeclient.Digest, segs []segment, size int64, chunksKnown bool) *blobReader {
	ctx, cancel := context.WithCancel(s.ctx)
	return &blobReader{s: s, digest: d, segs: segs, size: size, chunksKnown: chunksKnown, ctx: ctx, cancel: cancel, lock: make(chan struct{}, 1)}
}

func (r *blobReader) Size() int64 { return r.size }

func (r *blobReader) Close() error {
	r.cancel()
	r.lock <- struct{}{}
	defer func() { <-r.lock }()
	r.closed = true
	r.dropStream()
	r.cache = nil
	return nil
}

func (r *blobReader) dropStream() {
	if r.cur != nil {
		r.cur.close()
		r.cur = nil
	}
}

// ReadAt implements io.ReaderAt. Concurrent calls are served one at a
// time. Each call, its retries and its wait for the calls before it, has
// one deadline, the store's timeout.
func (r *blobReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(r.ctx, p, off)
}

// ReadAtContext implements storeclient.ContextReaderAt: ReadAt that also
// ends when ctx does (as well as within the store's timeout).
func (r *blobReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: read at negative offset %d", r.digest, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	if ctx != r.ctx {
		// Close cuts the read too.
		var stop context.CancelFunc
		ctx, stop = context.WithCancel(ctx)
		defer stop()
		defer context.AfterFunc(r.ctx, stop)()
	}
	ctx, cancel := r.s.within(ctx)
	defer cancel()
	select {
	case r.lock <- struct{}{}:
	default:
		select {
		case r.lock <- struct{}{}:
		case <-ctx.Done():
			return 0, r.readErr(off, len(p), fmt.Errorf("waiting for another read of the blob: %w", explain(ctx, ctx.Err())))
		}
	}
	defer func() { <-r.lock }()
	if r.closed {
		return 0, fmt.Errorf("blob %s: read after close", r.digest)
	}
	r.readEnd = off + int64(len(p))
	n := 0
	for n < len(p) && off+int64(n) < r.size {
		pos := off + int64(n)
		i, _ := slices.BinarySearchFunc(r.segs, pos, func(s segment, pos int64) int {
			switch {
			case s.off+s.size <= pos:
				return -1
			case s.off > pos:
				return 1
			}
			return 0
		})
		seg := r.segs[i]
		w := int64(r.s.opts.Window)
		idx := (pos - seg.off) / w
		start, end := idx*w, min((idx+1)*w, seg.size)
		if pos-seg.off == start && int64(len(p)-n) >= end-start && !r.cached(i, idx) {
			// The read covers the whole window: the stream fills p
			// directly, and the cache keeps what it had.
			_, err := r.fetch(ctx, i, start, end, p[n:n:n+int(end-start)])
			if errors.Is(err, errNeedChunks) {
				if err := r.loadChunks(ctx); err != nil {
					return n, err
				}
				continue
			}
			if err != nil {
				return n, r.readErr(off, len(p), err)
			}
			n += int(end - start)
			continue
		}
		data, err := r.window(ctx, i, idx)
		if errors.Is(err, errNeedChunks) {
			if err := r.loadChunks(ctx); err != nil {
				return n, err
			}
			continue
		}
		if err != nil {
			return n, r.readErr(off, len(p), err)
		}
		n += copy(p[n:], data[pos-seg.off-start:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readErr wraps the error of a ReadAt with what a log line needs: the
// store, the blob and the range.
func (r *blobReader) readErr(off int64, n int, err error) error {
	return r.s.wrap(fmt.Sprintf("read blob %s at %d+%d", r.digest, off, n), err)
}

// cached reports whether window idx of segment i is in the cache.
func (r *blobReader) cached(i int, idx int64) bool {
	for k := range r.cache {
		if r.cache[k].seg == i && r.cache[k].idx == idx {
			return true
		}
	}
	return false
}

// window returns window idx of segment i, from the cache or the stream.
func (r *blobReader) window(ctx context.Context, i int, idx int64) ([]byte, error) {
	r.tick++
	for k := range r.cache {
		if c := &r.cache[k]; c.seg == i && c.idx == idx {
			c.used = r.tick
			return c.data, nil
		}
	}
	// Fill a new slot, or the least recently used one with its own
	// buffer: a reader allocates its windows once.
	k := len(r.cache)
	if k < r.s.opts.CachedWindows {
		r.cache = append(r.cache, window{})
	} else {
		k = 0
		for j := range r.cache {
			if r.cache[j].used < r.cache[k].used {
				k = j
			}
		}
	}
	c := &r.cache[k]
	c.seg = -1 // not valid until filled
	w := int64(r.s.opts.Window)
	data, err := r.fetch(ctx, i, idx*w, min((idx+1)*w, r.segs[i].size), c.data[:0])
	if err != nil {
		return nil, err
	}
	*c = window{seg: i, idx: idx, data: data, used: r.tick}
	return data, nil
}

// fetch reads bytes [start, end) of segment i into dst (appending to
// dst[:0]), with retries within ctx's deadline.
func (r *blobReader) fetch(ctx context.Context, i int, start, end int64, dst []byte) ([]byte, error) {
	var data []byte
	err := r.s.retry(ctx, "read blob "+r.digest.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		var err error
		data, err = r.fillWindow(ctx, pkg, i, start, end, dst)
		if err != nil {
			r.dropStream()
		}
		return err
	})
	return data, err
}

// fillWindow reads bytes [start, end) of segment i, reusing the open
// stream when it has not passed start. The stream is watched by ctx while
// it reads.
func (r *blobReader) fillWindow(ctx context.Context, pkg grpc.CallOption, i int, start, end int64, dst []byte) ([]byte, error) {
	seg := r.segs[i]
	st := r.cur
	if st != nil && (r.curSeg != i || st.pos > start || (r.s.offsetReads.Load() > 0 && start-st.pos > maxSkip) || (st.limit > 0 && st.limit < end)) {
		r.dropStream()
		st = nil
	}
	if st == nil {
		if start > maxSkip && !r.chunksKnown && r.s.offsetReads.Load() < 0 {
			return nil, errNeedChunks
		}
		var err error
		st, err = r.s.openRead(r.ctx, ctx, seg.digest, start, r.streamLength(i, start, end), pkg)
		if err != nil {
			return nil, err
		}
		r.cur, r.curSeg = st, i
		if start-st.pos > maxSkip && !r.chunksKnown {
			// The server ignored the offset.
			return nil, errNeedChunks
		}
	} else {
		st.watch(ctx)
	}
	data, err := r.readWindow(st, seg, start, end, dst)
	if !st.unwatch() && err == nil && r.cur == st {
		// The deadline passed just as the window was complete: the
		// stream is cut, a later read needs a new one.
		r.dropStream()
	}
	return data, err
}

// Stream lengths (see streamLength).
const (
	minAhead = 256 << 10
	maxAhead = 16 << 20
)

// streamLength is how much a new stream of segment i from start asks the
// server for: what the ReadAt under way still wants (at least up to end),
// so that a random read costs the server no more than it needs; and when
// the stream continues where the last limited one ended (a sequential
// read), more each time, from minAhead doubling up to maxAhead and then
// the rest of the segment (0), so that a sequential read runs on one
// stream.
func (r *blobReader) streamLength(i int, start, end int64) int64 {
	seg := r.segs[i]
	want := max(end, min(seg.size, r.readEnd-seg.off)) - start
	if i == r.lastSeg && start == r.lastLimit && r.lastLimit > 0 {
		r.ahead = min(max(2*r.ahead, minAhead), 2*maxAhead)
	} else {
		r.ahead = 0
	}
	if r.ahead > maxAhead {
		return 0
	}
	length := max(want, r.ahead)
	if start+length >= seg.size {
		return 0
	}
	return length
}

// errNeedChunks is returned by fillWindow for a read far from the start
// of a blob on a server without the offset extension, before the server
// was asked for the blob's chunks.
var errNeedChunks = errors.New("chunk list needed to seek")

// loadChunks asks the server for the blob's chunks, to seek without
// streaming from the start, and reads by them from now on.
func (r *blobReader) loadChunks(ctx context.Context) error {
	r.chunksKnown = true
	segs, _, err := r.s.stat(ctx, r.digest, false)
	if err != nil || segs == nil {
		return err
	}
	last := segs[len(segs)-1]
	if got := last.off + last.size; got != r.size {
		return fmt.Errorf("grpc store %s: blob %s: the server lists chunks of %d bytes in all, %d expected: %w", r.s.target, r.digest, got, r.size, storeclient.ErrCorrupt)
	}
	if len(segs) > 1 {
		r.dropStream()
		for k := range r.cache {
			r.cache[k].seg = -1 // indexes into the old segs
		}
		r.segs = segs
	}
	return nil
}

// readWindow reads bytes [start, end) of segment seg from st, appending
// them to dst[:0].
func (r *blobReader) readWindow(st *readStream, seg segment, start, end int64, dst []byte) ([]byte, error) {
	data := dst[:0]
	if int64(cap(data)) < end-start {
		data = make([]byte, 0, end-start)
	}
	if st.limit > 0 && st.limit < end {
		return nil, fmt.Errorf("blob %s: a stream of %s ending at %d cannot serve bytes up to %d", r.digest, seg.digest, st.limit, end)
	}
	for st.pos < end {
		if err := st.fill(); err != nil {
			if err == io.EOF {
				return nil, fmt.Errorf("blob %s: stream of %s ended at byte %d of %d: %w", r.digest, seg.digest, st.pos, seg.size, storeclient.ErrCorrupt)
			}
			return nil, err
		}
		if st.pos+int64(len(st.pending)) > seg.size {
			return nil, fmt.Errorf("blob %s: server sent more than the %d bytes of %s: %w", r.digest, seg.size, seg.digest, storeclient.ErrCorrupt)
		}
		b := st.pending
		if st.pos < start {
			skip := min(int64(len(b)), start-st.pos)
			b = b[skip:]
			st.pos += skip
		}
		take := min(int64(len(b)), end-st.pos)
		data = append(data, b[:take]...)
		st.pos += take
		st.pending = b[take:]
	}
	if st.limit > 0 && st.pos == st.limit && st.limit < seg.size {
		// The end the stream was asked for: the server must end it.
		if err := st.fill(); err != io.EOF {
			if err == nil {
				err = fmt.Errorf("blob %s: server sent more than the %d bytes asked of %s: %w", r.digest, st.limit, seg.digest, storeclient.ErrCorrupt)
			}
			return nil, err
		}
		r.lastSeg, r.lastLimit = r.curSeg, st.limit
		r.dropStream()
		return data, nil
	}
	if st.pos == seg.size {
		// The end: the stream must end too, and if it ran from the
		// start its bytes must hash to the digest.
		if err := st.fill(); err != io.EOF {
			if err == nil {
				err = fmt.Errorf("blob %s: server sent more than the %d bytes of %s: %w", r.digest, seg.size, seg.digest, storeclient.ErrCorrupt)
			}
			return nil, err
		}
		if st.hasher != nil {
			if got := storeclient.Digest(st.hasher.Sum(nil)); got != seg.digest {
				return nil, fmt.Errorf("blob %s: server sent bytes of %s hashing to %s: %w", r.digest, seg.digest, got, storeclient.ErrCorrupt)
			}
		}
		r.dropStream()
	}
	return data, nil
}

// NewBlobWriter implements storeclient.BlobService. The upload streams as
// it is written; it is not retried (its bytes are not kept). Opening it,
// each Write and Commit have one timeout each; the time the caller spends
// between them does not count.
func (s *Store) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	if err := s.ensurePackage(ctx); err != nil {
		return nil, err
	}
	pkg := s.Package()
	if pkg == PackageAuto {
		pkg = PackageSnix
	}
	w := &blobWriter{s: s, live: newLiveStream(ctx), h: storeclient.NewHasher()}
	err := w.bounded(func() error {
		var err error
		w.stream, err = s.blobs.Put(w.live.ctx, packageOption{pkg: pkg})
		return err
	})
	if err != nil {
		w.live.close()
		return nil, s.wrap("put blob", err)
	}
	return w, nil
}

type blobWriter struct {
	s      *Store
	stream grpc.ClientStreamingClient[castorepb.BlobChunk, castorepb.PutBlobResponse]
	live   *liveStream
	h      *blake3.Hasher
	done   bool
	err    error
}

// bounded runs fn, which waits on the upload, within the timeout.
func (w *blobWriter) bounded(fn func() error) error {
	ctx, cancel := w.s.within(w.live.ctx)
	defer cancel()
	w.live.watch(ctx)
	defer w.live.unwatch()
	return w.live.explain(fn())
}

func (w *blobWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a committed or closed blob writer")
	}
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	err := w.bounded(func() error {
		for n < len(p) {
			c := p[n:min(len(p), n+putChunkSize)]
			if err := w.stream.Send(&castorepb.BlobChunk{Data: c}); err != nil {
				if err == io.EOF {
					// The server ended the call; its status says why.
					_, err = w.stream.CloseAndRecv()
				}
				return err
			}
			w.h.Write(c)
			n += len(c)
		}
		return nil
	})
	if err != nil {
		w.err = w.s.wrap("put blob", err)
		return n, w.err
	}
	return n, nil
}

func (w *blobWriter) Commit() (storeclient.Digest, error) {
	if w.done {
		return storeclient.Digest{}, errors.New("commit of a committed or closed blob writer")
	}
	w.done = true
	defer w.live.close()
	if w.err != nil {
		return storeclient.Digest{}, w.err
	}
	var resp *castorepb.PutBlobResponse
	err := w.bounded(func() error {
		var err error
		resp, err = w.stream.CloseAndRecv()
		return err
	})
	if err != nil {
		return storeclient.Digest{}, w.s.wrap("put blob", err)
	}
	want := storeclient.Digest(w.h.Sum(nil))
	got, err := storeclient.DigestFromBytes(resp.GetDigest())
	if err != nil || got != want {
		return storeclient.Digest{}, fmt.Errorf("grpc store %s: put blob: server returned digest %x for bytes hashing to %s: %w", w.s.target, resp.GetDigest(), want, storeclient.ErrCorrupt)
	}
	return got, nil
}

func (w *blobWriter) Close() error {
	if !w.done {
		// Cancelling the call makes the server discard the upload.
		w.done = true
		w.live.close()
	}
	return nil
}

package binarycache

import (
	"hash"
	"io"
	"sync"
)

// Chunks the readAhead goroutine decodes into, and how many of them are
// in flight: enough to keep both the decoder and the NAR reader busy.
const (
	aheadChunk  = 1 << 20
	aheadChunks = 4
)

// readAhead reads its source (the download and its decompressor) in a
// goroutine of its own, a chunk ahead of its reader. The NAR reader then
// hashes and parses one chunk while the next is read, its FileHash taken
// and decompressed: on two cores the two halves of a fetch run at once.
// (This is cheaper than the zstd decoder's own concurrency, which splits
// decoding a block into two goroutines and costs a quarter more CPU than
// decoding in one.)
type readAhead struct {
	full chan aheadChunkData
	free chan []byte
	stop chan struct{}
	done chan struct{}
	once sync.Once

	cur  []byte // unread part of the chunk being read
	buf  []byte // the chunk cur is in, handed back when cur is read
	err  error  // the source's error, after the last chunk
	last bool   // err is set
}

type aheadChunkData struct {
	b   []byte
	err error
}

// newReadAhead starts reading src. The caller must call stop, and may
// then call wait, which returns when the goroutine no longer reads src.
func newReadAhead(src io.Reader) *readAhead {
	r := &readAhead{
		full: make(chan aheadChunkData, aheadChunks),
		free: make(chan []byte, aheadChunks),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range aheadChunks {
		r.free <- make([]byte, aheadChunk)
	}
	go r.fill(src)
	return r
}

// fill reads src into free chunks until it fails or ends, or until stop.
func (r *readAhead) fill(src io.Reader) {
	defer close(r.done)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
		n, err := fillChunk(src, b)
		select {
		case r.full <- aheadChunkData{b[:n], err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// fillChunk reads src into b until b is full or src fails or ends. Unlike
// io.ReadFull it returns the source's error as it is: only a bare io.EOF is
// the source's end, while an io.ErrUnexpectedEOF of the source (a download
// cut short, a truncated xz or zstd stream), wrapped or not, is a failure
// whose cause the NAR reader must report.
func fillChunk(src io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := src.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read implements io.Reader, returning the source's bytes and, after the
// last of them, its error (io.EOF at its end).
func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.last {
			return 0, r.err
		}
		if r.buf != nil {
			r.free <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		c := <-r.full
		r.buf, r.cur = c.b, c.b
		if c.err != nil {
			r.err, r.last = c.err, true
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// stopFilling tells the goroutine to read no further chunk.
func (r *readAhead) stopFilling() { r.once.Do(func() { close(r.stop) }) }

// wait waits until the goroutine has stopped reading the source: after
// stopFilling, a read under way must end first (closing the download ends
// one that waits for the network).
func (r *readAhead) wait() { <-r.done }

// hashAhead is a hash.Hash that hashes in a goroutine of its own: the
// FileHash of a download then costs its reader (readAhead's goroutine,
// which also decompresses) only a copy. Write and Sum are called by one
// goroutine at a time; stop must be called when it is no longer used.
type hashAhead struct {
	h    hash.Hash
	cur  []byte // filling, not yet sent
	full chan []byte
	free chan []byte
	done chan struct{}
	once sync.Once
}

// hashChunk is the size of the pieces handed to the hashing goroutine.
const (
	hashChunk  = 256 << 10
	hashChunks = 4
)

func newHashAhead(h hash.Hash) *hashAhead {
	a := &hashAhead{h: h, full: make(chan []byte, hashChunks), free: make(chan []byte, hashChunks), done: make(chan struct{})}
	for range hashChunks {
		a.free <- make([]byte, 0, hashChunk)
	}
	go func() {
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

// Write implements hash.Hash.
func (a *hashAhead) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Sum implements hash.Hash: it waits for everything written to be
// hashed, and stops the goroutine (nothing may be written after it).
func (a *hashAhead) Sum(b []byte) []byte {
	if len(a.cur) > 0 {
		a.full <- a.cur
		a.cur = nil
	}
	a.stop()
	return a.h.Sum(b)
}

// stop ends the goroutine, after what was sent to it.
func (a *hashAhead) stop() {
	a.once.Do(func() { close(a.full) })
	<-a.done
}

// Reset, Size and BlockSize implement hash.Hash; Reset is not supported
// (a hashAhead is used once).
func (a *hashAhead) Reset()         { panic("binarycache: hashAhead cannot be reset") }
func (a *hashAhead) Size() int      { return a.h.Size() }
func (a *hashAhead) BlockSize() int { return a.h.BlockSize() }

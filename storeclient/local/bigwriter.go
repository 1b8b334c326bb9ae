package local

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"
)

// A blob larger than directThreshold is written by a bigWriter: the
// caller's goroutine hashes and copies the bytes into chunks, and a
// goroutine of the writer writes the chunks to the file, so that hashing
// and the disk work at the same time.
//
// On a store that syncs (not Options.NoSync) and is read later (not
// Options.CachedWrites), chunks go to the disk with
// O_DIRECT where the filesystem allows it. A blob that is being imported
// is not read again soon, and the store must sync it before the metadata
// that names it anyway: writing through the page cache would copy every
// byte into newly allocated page-cache pages (on a VM those can cost more
// than the disk: the host backs guest memory lazily) and then wait for
// their writeback in the next syncfs. O_DIRECT needs the file offset,
// length and memory of a write aligned to the device's block size, so
// chunks are aligned buffers written at aligned offsets; the unaligned
// head and tail of a blob go through the page cache.
const (
	directThreshold = 1 << 20
	bigChunk        = 1 << 20
	bigChunks       = 3 // chunks per writer: two being written, one being filled
	directAlign     = 4096
)

// bigWriter writes the rest of a blob from file offset off on.
type bigWriter struct {
	s      *Store
	f      *os.File
	direct bool // try O_DIRECT; only the write goroutine reads it after start
	// setDirect turns O_DIRECT on and off (a field so that tests can
	// refuse it).
	setDirect func(f *os.File, on bool) error

	cur       []byte // the chunk being filled, nil if none
	limit     int    // how full cur gets before it is written
	allocated int    // chunks taken from the pool
	full      chan []byte
	free      chan []byte
	done      chan struct{}
	finished  bool

	failed atomic.Bool
	err    error // the first write error; read after failed or done
	errMu  sync.Mutex
}

func newBigWriter(s *Store, f *os.File, off int64, direct bool) *bigWriter {
	w := &bigWriter{
		s:         s,
		f:         f,
		direct:    direct,
		setDirect: setDirect,
		// The first chunk ends where the file offset is aligned, so that
		// every full chunk after it can be written directly.
		limit: bigChunk - int(off%directAlign),
		full:  make(chan []byte, bigChunks),
		free:  make(chan []byte, bigChunks),
		done:  make(chan struct{}),
	}
	go w.run(off)
	return w
}

// write copies p into chunks and hands every full chunk to the write
// goroutine. It fails with the goroutine's first error.
func (w *bigWriter) write(p []byte) error {
	for len(p) > 0 {
		if w.failed.Load() {
			return w.firstErr()
		}
		if w.cur == nil {
			w.cur = w.chunk()
		}
		n := copy(w.cur[len(w.cur):w.limit], p)
		w.cur = w.cur[:len(w.cur)+n]
		p = p[n:]
		if len(w.cur) == w.limit {
			w.full <- w.cur
			w.cur, w.limit = nil, bigChunk
		}
	}
	return nil
}

// chunk returns an empty chunk: a new one from the pool while the writer
// has fewer than bigChunks, else the next one the goroutine has written.
func (w *bigWriter) chunk() []byte {
	if w.allocated < bigChunks {
		w.allocated++
		return w.s.directChunk()
	}
	return (<-w.free)[:0]
}

// directChunk returns an empty aligned chunk from the store's pool.
func (s *Store) directChunk() []byte {
	if b, ok := s.directBufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return alignedChunk()
}

// alignedChunk allocates a chunk whose memory starts at a multiple of
// directAlign.
func alignedChunk() []byte {
	raw := make([]byte, bigChunk+directAlign)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 {
		shift = directAlign - r
	}
	return raw[shift : shift : shift+bigChunk]
}

// finish writes what is left, waits for the goroutine and returns the
// chunks to the pool. It returns the first write error. Only the first
// call does anything.
func (w *bigWriter) finish() error {
	if w.finished {
		return w.firstErr()
	}
	w.finished = true
	if len(w.cur) > 0 {
		w.full <- w.cur
		w.cur = nil
	}
	close(w.full)
	<-w.done
	for range w.allocated {
		b := <-w.free
		w.s.directBufs.Put(&b)
	}
	return w.firstErr()
}

func (w *bigWriter) firstErr() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *bigWriter) fail(err error) {
	w.errMu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.errMu.Unlock()
	w.failed.Store(true)
}

// run writes the chunks in order from off on. After an error it keeps
// taking chunks, so that the writer never waits for a free one, but writes
// no more.
func (w *bigWriter) run(off int64) {
	defer close(w.done)
	directOn := false
	kicked := off
	for b := range w.full {
		if !w.failed.Load() {
			err := w.writeChunk(b, off, &directOn)
			if err != nil {
				w.fail(err)
			} else {
				off += int64(len(b))
				if !directOn && !w.s.noSync && off-kicked >= writebackStep {
					startWriteback(w.f, kicked, off-kicked)
					kicked = off
				}
			}
		}
		w.free <- b
	}
	if directOn {
		if err := w.setDirect(w.f, false); err != nil && !w.failed.Load() {
			w.fail(err)
		}
	}
	if !w.s.noSync && off > kicked {
		startWriteback(w.f, kicked, off-kicked)
	}
}

// writeChunk writes b at off: directly when it is aligned and the
// filesystem takes direct writes, else through the page cache. A
// filesystem that refuses O_DIRECT (EINVAL, at fcntl or at the first
// write) turns it off for the rest of the blob.
func (w *bigWriter) writeChunk(b []byte, off int64, directOn *bool) error {
	want := w.direct && off%directAlign == 0 && len(b)%directAlign == 0
	if want != *directOn {
		if err := w.setDirect(w.f, want); err != nil {
			if !want {
				return err
			}
			w.direct, want = false, false
		} else {
			*directOn = want
		}
	}
	_, err := w.f.WriteAt(b, off)
	if err != nil && *directOn && errors.Is(err, errDirectRefused) {
		w.direct = false
		if err := w.setDirect(w.f, false); err != nil {
			return err
		}
		*directOn = false
		_, err = w.f.WriteAt(b, off)
	}
	return err
}

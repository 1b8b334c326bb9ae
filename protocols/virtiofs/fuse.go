//go:build linux

package virtiofs

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE wire facts the transport needs before go-fuse parses a request:
// which requests start and end a mount, and how to fail one go-fuse
// could not answer.
const (
	opInit    = 26 // FUSE_INIT
	opDestroy = 38 // FUSE_DESTROY
	opSyncFS  = 50 // FUSE_SYNCFS

	inHeaderSize  = 40 // struct fuse_in_header
	outHeaderSize = 16 // struct fuse_out_header
)

// fuseSession serves the FUSE requests of one front-end connection.
//
// Every FUSE_INIT starts a new mount with a fresh RawFileSystem and
// go-fuse ProtocolServer: the guest sends INIT again after DESTROY
// (unmount, then mount) and after a reboot (no DESTROY at all), and the
// kernel's node IDs, open handles and lookup counts from before mean
// nothing then. Requests already running on the old mount finish on it.
type fuseSession struct {
	newFS func() fuse.RawFileSystem
	opts  fuse.MountOptions
	log   *slog.Logger

	cur    atomic.Pointer[fuseMount]
	initMu sync.Mutex // serialises INIT and DESTROY
}

// fuseMount is one guest mount: INIT to DESTROY.
type fuseMount struct {
	fs fuse.RawFileSystem
	ps *fuse.ProtocolServer
}

func newFuseSession(newFS func() fuse.RawFileSystem, opts fuse.MountOptions, log *slog.Logger) *fuseSession {
	if opts.Logger == nil {
		// go-fuse logs what it refuses (bad or unknown requests),
		// one line each.
		opts.Logger = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	if opts.PanicHandler == nil {
		// go-fuse recovers a panic in a request handler and answers EIO.
		opts.PanicHandler = func(p any) fuse.Status {
			log.Error("virtiofs: request handler panicked; answering EIO", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			return fuse.EIO
		}
	}
	return &fuseSession{newFS: newFS, opts: opts, log: log}
}

// handle serves one request chain and returns the bytes written to
// c.out.
func (s *fuseSession) handle(c *chain) uint32 {
	var hdr [inHeaderSize]byte
	if copyIn(hdr[:], c.in) < inHeaderSize {
		s.log.Warn("virtiofs: FUSE request shorter than its header", "bytes", iovSize(c.in))
		return 0
	}
	opcode := binary.LittleEndian.Uint32(hdr[4:])
	unique := binary.LittleEndian.Uint64(hdr[8:])

	m := s.cur.Load()
	switch opcode {
	case opInit:
		return s.init(c, unique)
	case opSyncFS:
		// Only virtio-fs guests send it (on sync and at shutdown);
		// a read-only store has nothing to flush. go-fuse has no
		// handler and would log every one as unimplemented.
		if m != nil {
			return replyError(c.out, unique, 0)
		}
	case opDestroy:
		if m != nil {
			defer s.endMount(m)
		}
	}
	if m == nil {
		// libfuse answers requests before INIT the same way.
		s.log.Warn("virtiofs: FUSE request before INIT", "opcode", opcode)
		return replyError(c.out, unique, syscall.EIO)
	}
	n, status := m.ps.HandleRequest(c.in, c.out)
	if !status.Ok() {
		// go-fuse has logged why; the guest still needs an answer.
		return replyError(c.out, unique, syscall.Errno(status))
	}
	return uint32(n)
}

// init serves an INIT on a new mount and, once it is answered, makes that
// the current mount, ending the one before. Until then the new
// ProtocolServer is seen by no other request: go-fuse records the
// negotiated settings without a lock.
func (s *fuseSession) init(c *chain, unique uint64) uint32 {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	fs := s.newFS()
	m := &fuseMount{fs: fs, ps: fuse.NewProtocolServer(fs, &s.opts)}
	n, status := m.ps.HandleRequest(c.in, c.out)
	if !status.Ok() {
		return replyError(c.out, unique, syscall.Errno(status))
	}
	if old := s.cur.Swap(m); old != nil {
		old.fs.OnUnmount()
	}
	return uint32(n)
}

// endMount ends m after its DESTROY was answered, unless an INIT already
// replaced it.
func (s *fuseSession) endMount(m *fuseMount) {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if s.cur.CompareAndSwap(m, nil) {
		m.fs.OnUnmount()
	}
}

// close ends the current mount when the connection ends.
func (s *fuseSession) close() {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if m := s.cur.Swap(nil); m != nil {
		m.fs.OnUnmount()
	}
}

// replyError writes a FUSE reply carrying only errno (0: success) to
// out, if out can hold one, and returns its length.
func replyError(out [][]byte, unique uint64, errno syscall.Errno) uint32 {
	var b [outHeaderSize]byte
	le := binary.LittleEndian
	le.PutUint32(b[:], outHeaderSize)
	le.PutUint32(b[4:], uint32(-int32(errno)))
	le.PutUint64(b[8:], unique)
	if iovSize(out) < outHeaderSize {
		return 0
	}
	return uint32(copyOut(out, b[:]))
}

// copyIn fills dst from the start of iov and returns the bytes copied.
func copyIn(dst []byte, iov [][]byte) int {
	n := 0
	for _, b := range iov {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return n
}

// copyOut writes src to the start of iov and returns the bytes copied.
func copyOut(iov [][]byte, src []byte) int {
	n := 0
	for _, b := range iov {
		if n == len(src) {
			break
		}
		n += copy(b, src[n:])
	}
	return n
}

func iovSize(iov [][]byte) int {
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	return n
}

package ninep

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/p9/linux"

	"github.com/storefs/storefs/protocols/internal/sendfile"
	"github.com/storefs/storefs/vfs"
)

// Zero-copy Rread. The p9 library answers Tread by calling file.ReadAt with
// a buffer from its pool and then writing the reply to the wire layer in
// pieces: header, count, and that same buffer as payload. When the blob is
// a file on a local filesystem, file.ReadAt does not read: it records
// where the bytes are (splicedReads, keyed by the buffer's first byte) and
// returns the count the read would have had. The wire layer, finding the
// payload in splicedReads, writes the 11-byte header and then has the
// kernel send the payload from the blob file with sendfile(2): page cache
// to socket, with neither the pread into the buffer nor the copy out of it
// through user space. The library still does everything else (fid lookup,
// open and xattr checks, flushes, tags), so replies are the same either way.

// spliceMin is the smallest Rread payload sent with sendfile.
const spliceMin = sendfile.MinPayload

// splicedRead is where the payload of one Rread is: n bytes at off in f,
// from the blob of size bytes that starts at base in f.
type splicedRead struct {
	f          *os.File
	off        int64
	n          int
	base, size int64
}

// directFile is a fid the wire layer answers Tread for itself, without the
// library: a fid the library has read a blob file through (file.ReadAt
// left a splicedRead), until the fid is clunked or made again.
type directFile struct {
	f          *os.File
	base, size int64
}

// splicedReads are the Rread payloads file.ReadAt left for the wire layer
// to send from their files, keyed by the first byte of the library's
// buffer: the buffer belongs to one Tread from ReadAt until its reply is
// written, so the key is unique while the entry exists.
type splicedReads struct {
	off atomic.Bool // sendfile failed on this connection: reads are copied
	mu  sync.Mutex
	m   map[*byte]splicedRead
}

// enabled reports whether reads may be left for sendfile.
func (s *splicedReads) enabled() bool { return s != nil && !s.off.Load() }

// disable makes later reads copy.
func (s *splicedReads) disable() { s.off.Store(true) }

func newSplicedReads() *splicedReads { return &splicedReads{m: make(map[*byte]splicedRead)} }

// put records that the payload buf (not filled) is len(buf) bytes at
// offset off of the blob of size bytes at base in f.
func (s *splicedReads) put(buf []byte, f *os.File, base, size, off int64) {
	s.mu.Lock()
	s.m[&buf[0]] = splicedRead{f: f, off: base + off, n: len(buf), base: base, size: size}
	s.mu.Unlock()
}

// take returns and forgets the entry of payload, if file.ReadAt left one.
// An entry whose length differs from the payload's is an error: the
// buffer holds no data, so it must not be sent.
func (s *splicedReads) take(payload []byte) (splicedRead, bool, error) {
	if len(payload) == 0 {
		return splicedRead{}, false, nil
	}
	s.mu.Lock()
	r, ok := s.m[&payload[0]]
	if ok {
		delete(s.m, &payload[0])
	}
	s.mu.Unlock()
	if ok && r.n != len(payload) {
		return splicedRead{}, false, fmt.Errorf("ninep: Rread payload of %d bytes for a sendfile read of %d", len(payload), r.n)
	}
	return r, ok, nil
}

// sendSpliced sends an Rread whose payload r is in a blob file (see
// sendfileReply). A direct read (buf nil) bypassed vfs, so it is reported
// to the FS's Observer here; vfs counted the others when file.ReadAt
// asked it.
func (c *wireConn) sendSpliced(frame, buf []byte, r splicedRead) error {
	obs, proto := c.fs.Options().Observer, c.fs.Protocol()
	if obs == nil || buf != nil {
		return c.sendfileReply(frame, buf, r)
	}
	t0 := time.Now()
	obs.OpStart(proto, vfs.OpRead)
	err := c.sendfileReply(frame, buf, r)
	n := r.n
	if err != nil {
		n = 0
	}
	obs.OpEnd(proto, vfs.OpRead, time.Since(t0), n, err)
	return err
}

// sendCopied sends what sendfile did not: the payload from byte from on,
// read into buf (the library's buffer, the reply's until Write returns;
// nil for a Tread the wire layer answers itself) and
// written from memory, after the header frame unless frame is nil (already
// sent). The caller holds sendMu. If the read fails before anything was
// sent the reply becomes Rlerror EIO, as vfs answers a failed read; after
// part of the reply went out the stream is unusable and the connection is
// closed.
func (c *wireConn) sendCopied(frame, buf []byte, r splicedRead, from int) error {
	if buf == nil {
		buf = make([]byte, r.n) // a direct read: no library buffer
	}
	if _, err := r.f.ReadAt(buf[from:], r.off+int64(from)); err != nil {
		if frame != nil {
			c.log.Warn("ninep: reading a blob file for Rread failed", "err", err)
			_, werr := c.conn.Write(rlerror(binary.LittleEndian.Uint16(frame[5:]), linux.EIO))
			return werr
		}
		c.log.Error("ninep: closing connection: reading a blob file failed in the middle of an Rread", "err", err)
		c.Close()
		return fmt.Errorf("ninep: Rread from blob file: %w", err)
	}
	var bufs net.Buffers
	if frame != nil {
		bufs = append(bufs, frame)
	}
	bufs = append(bufs, buf[from:])
	_, err := bufs.WriteTo(c.conn)
	return err
}

// learn makes fid a direct fid after the library answered its Tread req
// from the blob file of r, unless the fid was clunked or made again since
// the request was read (its reference changed).
func (c *wireConn) learn(req request, r splicedRead) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ref := c.fids[req.fid]; ref != nil && ref == req.ref {
		c.direct[req.fid] = directFile{f: r.f, base: r.base, size: r.size}
	}
}

// readDirect answers a Tread of a direct fid itself, with sendfile, before
// reading the next request (so a Tflush of it finds it answered, as the
// library would). It leaves to the library what the library answers
// differently from a plain read: other fids, reads at or past the end of
// the file, and reads of fewer than spliceMin bytes. It reports whether
// it answered.
func (c *wireConn) readDirect(tag uint16, fid uint32, off uint64, count uint32) (bool, error) {
	if !c.spliced.enabled() {
		return false, nil
	}
	c.mu.Lock()
	d, ok := c.direct[fid]
	_, busy := c.inflight[tag] // a reused tag: start reports it
	c.mu.Unlock()
	if !ok || busy || off >= uint64(d.size) {
		return false, nil
	}
	n := min(uint64(count), uint64(d.size)-off)
	if n < spliceMin {
		return false, nil
	}
	frame := make([]byte, 0, ioHeaderSize)
	frame = binary.LittleEndian.AppendUint32(frame, uint32(ioHeaderSize+n))
	frame = append(frame, tRread)
	frame = binary.LittleEndian.AppendUint16(frame, tag)
	frame = binary.LittleEndian.AppendUint32(frame, uint32(n))
	if err := c.sendSpliced(frame, nil, splicedRead{f: d.f, off: d.base + int64(off), n: int(n)}); err != nil {
		c.failSend(err)
		return true, err
	}
	return true, nil
}

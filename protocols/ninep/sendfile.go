package ninep

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/storefs/storefs/protocols/internal/sendfile"
)

// Reads. vfs.File.Read gives a read's bytes either in memory or as a range
// of a local file that holds them, verified (vfs.ReadResult). A range of at
// least spliceMin bytes goes out with sendfile(2): the Rread header from
// memory, then the payload page cache to socket, with neither a pread into
// a buffer nor a copy out of it through user space. Before that, the range
// is checked against the file's size (once per file and fid), so a blob
// file shorter than its blob is read by copying, which answers EIO, instead
// of failing after the header went out.

// spliceMin is the smallest Rread payload sent with sendfile.
const spliceMin = sendfile.MinPayload

// fileRange is an Rread payload in a file: n bytes at off in f.
type fileRange struct {
	f   *os.File
	off int64
	n   int
}

// read answers Tread: from an xattr fid's value, or from the fid's open
// file.
func (c *conn) read(f *fid, r *request) result {
	if f.isAttr {
		var b []byte
		if r.off < uint64(len(f.xattr)) {
			b = f.xattr[r.off:]
			b = b[:min(len(b), int(r.count))]
		}
		return rread(r.tag, b)
	}
	f.mu.Lock()
	opened, h := f.opened, f.file
	f.mu.Unlock()
	if !opened {
		return result{err: errNotOpen}
	}
	if h == nil {
		// An open directory: vfs says what reading one is (EISDIR).
		_, err := c.srv.fs.Open(c.ctx, f.e.node)
		if err == nil {
			return result{err: errNotOpen}
		}
		return result{err: errnoOf(err)}
	}
	if r.off > 1<<63-1 {
		r.off = 1<<63 - 1 // past any end: vfs answers 0 bytes
	}
	buf := c.getBuf()
	done := func() { c.putBuf(buf) }
	res, err := h.Read(buf[:r.count], int64(r.off))
	if err != nil {
		done()
		return result{err: errnoOf(err)}
	}
	if res.File != nil && res.Len >= spliceMin && c.raw != nil && !c.noSendfile.Load() && f.holds(res.File, res.Off+int64(res.Len)) {
		done()
		out := rreadHead(r.tag, res.Len)
		out.file = &fileRange{f: res.File, off: res.Off, n: res.Len}
		return out
	}
	b, err := res.Bytes(buf)
	if err != nil {
		done()
		return result{err: errnoOf(err)}
	}
	out := rread(r.tag, b)
	out.done = done
	return out
}

// holds reports whether file blob (the one f's reads come from) has at
// least end bytes.
func (f *fid) holds(blob *os.File, end int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blob != blob {
		st, err := blob.Stat()
		if err != nil {
			return false
		}
		f.blob, f.blobSize = blob, st.Size()
	}
	return end <= f.blobSize
}

// rreadHead returns an Rread of n payload bytes without its payload.
func rreadHead(tag uint16, n int) result {
	e := newReply(tTread+1, tag, 4)
	e.u32(uint32(n))
	return result{msg: e.done(n)}
}

// rread returns an Rread of payload b.
func rread(tag uint16, b []byte) result {
	res := rreadHead(tag, len(b))
	if b == nil {
		b = []byte{}
	}
	res.data = b
	return res
}

// sendCopied sends what sendfile did not: the payload from byte from on,
// read into memory and written after head unless head is nil (already
// sent). The caller holds wmu. If the read fails before anything was sent
// the reply becomes Rlerror EIO, as vfs answers a failed read; after part
// of the reply went out the stream is unusable and the connection is
// closed.
func (c *conn) sendCopied(head []byte, r fileRange, from int) error {
	buf := make([]byte, r.n-from)
	if _, err := r.f.ReadAt(buf, r.off+int64(from)); err != nil {
		if head != nil {
			c.log.Warn("ninep: reading a blob file for Rread failed", "err", err)
			return c.write(rlerror(binary.LittleEndian.Uint16(head[5:]), errPanic))
		}
		c.log.Error("ninep: closing connection: reading a blob file failed in the middle of an Rread", "err", err)
		c.Close()
		return fmt.Errorf("ninep: Rread from blob file: %w", err)
	}
	if head != nil {
		if err := c.write(head); err != nil {
			return err
		}
	}
	return c.write(buf)
}

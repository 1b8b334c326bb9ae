package nfs

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"syscall"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// NFSv3 procedures answered by the record layer (RFC 1813). Each decodes
// its arguments, asks vfs, and encodes the result; a decoding failure is
// returned as an error and answered with GARBAGE_ARGS. Every error status
// comes from statusOf.

// ftype3 values.
const (
	nf3Reg = 1
	nf3Dir = 2
	nf3Lnk = 5
)

// ACCESS3 bits.
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Execute = 0x20
)

// fsid is the same for every node: one filesystem.
const fsid = 0

// fattr3Len is the encoded size of fattr3.
const fattr3Len = 84

// fattr appends n's fattr3.
func (c *conn) fattr(w *xdrWriter, n vfs.Node) {
	a := c.s.fs.Attr(n)
	switch {
	case a.Mode.IsDir():
		w.u32(nf3Dir)
	case a.Mode&fs.ModeSymlink != 0:
		w.u32(nf3Lnk)
	default:
		w.u32(nf3Reg)
	}
	w.u32(a.UnixMode() & 0o7777)
	w.u32(a.Nlink)
	w.u32(a.UID)
	w.u32(a.GID)
	w.u64(a.Size)
	w.u64(a.Blocks * 512) // used
	w.u64(0)              // rdev
	w.u64(fsid)
	w.u64(a.Ino)
	t := uint32(a.Mtime.Unix())
	for range 3 { // atime, mtime, ctime
		w.u32(t)
		w.u32(uint32(a.Mtime.Nanosecond()))
	}
}

// postOpAttr appends post_op_attr: n's attributes, or none for an invalid
// node.
func (c *conn) postOpAttr(w *xdrWriter, n vfs.Node) {
	if !n.IsValid() {
		w.bool(false)
		return
	}
	w.bool(true)
	c.fattr(w, n)
}

// node decodes a file handle argument and resolves it. A handle that does
// not decode is garbage; one that names nothing is an error with ESTALE.
func (c *conn) node(r *xdrReader) (vfs.Node, error, error) {
	fh := r.opaque(maxFH)
	if r.err != nil {
		return vfs.Node{}, nil, r.err
	}
	n, err := c.s.resolve(c.s.ctx, fh)
	return n, err, nil
}

// simple answers a procedure whose arguments are one handle and whose
// failure body is a post_op_attr: GETATTR-like. ok encodes the success
// body after the status.
func (c *conn) oneHandle(cl *call, w *xdrWriter, failAttr bool, ok func(n vfs.Node) error) error {
	r := xdrReader{b: cl.args}
	n, err, garbage := c.node(&r)
	if garbage != nil {
		return garbage
	}
	if err != nil {
		w.u32(statusOf(err))
		if failAttr {
			w.bool(false)
		}
		return nil
	}
	return ok(n)
}

func (c *conn) getattr(cl *call, w *xdrWriter) error {
	return c.oneHandle(cl, w, false, func(n vfs.Node) error {
		w.u32(nfs3OK)
		c.fattr(w, n)
		return nil
	})
}

// refuse answers a write procedure: ROFS (STALE for a handle that names
// nothing), with a failure body of zeros words of "no attributes"
// (wcc_data is two, RENAME's two wcc_data four, LINK's post_op_attr and
// wcc_data three).
func refuse(zeros int) func(c *conn, cl *call, w *xdrWriter) error {
	return func(c *conn, cl *call, w *xdrWriter) error {
		r := xdrReader{b: cl.args}
		_, err, garbage := c.node(&r)
		if garbage != nil {
			return garbage
		}
		if err == nil {
			err = vfs.ErrReadOnly
		}
		w.u32(statusOf(err))
		for range zeros {
			w.u32(0)
		}
		return nil
	}
}

func (c *conn) lookup(cl *call, w *xdrWriter) error {
	r := xdrReader{b: cl.args}
	dir, err, garbage := c.node(&r)
	// Any length the record holds (it aliases the record: nothing is
	// allocated); vfs decides what is too long (ENAMETOOLONG).
	name := r.opaque(len(r.b))
	if garbage != nil || r.err != nil {
		return errGarbage
	}
	var n vfs.Node
	if err == nil {
		switch string(name) {
		case ".":
			n = dir
		case "..":
			// Content handles have no unique parent (equal directories
			// share one); only the root's is known. The client resolves
			// ".." from its own cache.
			if dir.IsRoot() {
				n = dir
			} else {
				err = &vfs.Error{Op: "lookup", Name: "..", Errno: noParent, Err: errors.New("a content handle has no unique parent")}
			}
		default:
			n, err = c.s.fs.Lookup(c.s.ctx, dir, string(name))
		}
	}
	if err != nil {
		w.u32(statusOf(err))
		c.postOpAttr(w, dir)
		return nil
	}
	w.u32(nfs3OK)
	w.opaque(c.s.handOut(n))
	c.postOpAttr(w, n)
	c.postOpAttr(w, dir)
	return nil
}

func (c *conn) access(cl *call, w *xdrWriter) error {
	r := xdrReader{b: cl.args}
	n, err, garbage := c.node(&r)
	want := r.u32()
	if garbage != nil || r.err != nil {
		return errGarbage
	}
	if err != nil {
		w.u32(statusOf(err))
		w.bool(false)
		return nil
	}
	// Everyone may read everything; nobody may write. Directories may be
	// searched, files with an execute bit run.
	grant := uint32(access3Read)
	a := c.s.fs.Attr(n)
	switch {
	case a.Mode.IsDir():
		grant |= access3Lookup | access3Execute
	case a.Mode&0o111 != 0 && a.Mode.IsRegular():
		grant |= access3Execute
	}
	w.u32(nfs3OK)
	c.postOpAttr(w, n)
	w.u32(want & grant)
	return nil
}

func (c *conn) readlink(cl *call, w *xdrWriter) error {
	return c.oneHandle(cl, w, true, func(n vfs.Node) error {
		target, err := c.s.fs.Readlink(n)
		if err != nil {
			w.u32(statusOf(err))
			c.postOpAttr(w, n)
			return nil
		}
		w.u32(nfs3OK)
		c.postOpAttr(w, n)
		w.string(target)
		return nil
	})
}

func (c *conn) read(cl *call, w *xdrWriter) error {
	r := xdrReader{b: cl.args}
	n, err, garbage := c.node(&r)
	off, count := r.u64(), r.u32()
	if garbage != nil || r.err != nil {
		return errGarbage
	}
	if err != nil {
		w.u32(statusOf(err))
		w.bool(false)
		return nil
	}
	count = min(count, c.s.opts.MaxRead)
	f, err := c.s.fs.Open(c.s.ctx, n)
	if err != nil {
		w.u32(statusOf(err))
		c.postOpAttr(w, n)
		return nil
	}
	closeF := true // unless the reply's data is sent from the blob file
	defer func() {
		if closeF {
			f.Close()
		}
	}()
	if off > math.MaxInt64 {
		off = math.MaxInt64 // past every file's end: an empty read at EOF
	}
	// Read straight into the reply: status, attributes, count, eof and
	// the data's length come first, patched once vfs said how many bytes
	// there are (it clamps at the end of the file).
	head := len(w.b)
	w.u32(nfs3OK)
	c.postOpAttr(w, n)
	fields := len(w.b)
	w.u32(0)
	w.bool(false)
	w.u32(0)
	dataAt := len(w.b)
	if cap(w.b)-dataAt < int(count)+3 {
		grown := make([]byte, dataAt, dataAt+int(count)+3)
		copy(grown, w.b)
		w.b = grown
	}
	data := w.b[dataAt : dataAt+int(count)]
	res, err := f.Read(data, int64(off))
	if err == nil && res.File != nil && res.Len >= spliceMin && c.sendfileOK() {
		c.readFields(w, fields, res.Len, int64(off)+int64(res.Len) >= f.Size())
		// Sent by conn.sendFile after the head, which closes f.
		w.tail = &fileTail{f: res.File, off: res.Off, n: res.Len, vf: f}
		closeF = false
		return nil
	}
	if err == nil {
		data, err = res.Bytes(data)
	}
	if err != nil {
		c.log.Debug("nfs: read failed", "err", err)
		w.b = w.b[:head]
		w.u32(statusOf(err))
		c.postOpAttr(w, n)
		return nil
	}
	c.readFields(w, fields, len(data), int64(off)+int64(len(data)) >= f.Size())
	w.b = w.b[:dataAt+len(data)]
	w.pad(len(data))
	return nil
}

// readFields fills in a READ reply's count, eof and data length, written
// as zeros at at.
func (c *conn) readFields(w *xdrWriter, at, n int, eof bool) {
	binary.BigEndian.PutUint32(w.b[at:], uint32(n))
	if eof {
		binary.BigEndian.PutUint32(w.b[at+4:], 1)
	}
	binary.BigEndian.PutUint32(w.b[at+8:], uint32(n))
}

// Directory listing. NFS cookies: 1 is after ".", 2 after "..", and an
// entry's vfs cookie k is NFS cookie k+2 (vfs cookies below the root are
// entry indexes; at the root they are order-preserving name keys whose
// top value is never reached in practice, see vfs/doc.go). vfs cookies
// stay valid whatever happens — Directories are immutable and root cookies
// resume by name — so the cookie verifier is only an identity the client
// echoes back: it is never checked and NFS3ERR_BAD_COOKIE never sent.
// dircount is ignored, as knfsd does: maxcount alone bounds a reply. A
// cookie past the end (any cookie, up to 2⁶⁴-1) gets an empty listing with
// eof; a maxcount too small for the empty listing, or for the first entry
// due, gets NFS3ERR_TOOSMALL.
const (
	cookieDot    = 1
	cookieDotDot = 2
	// readdirOverhead is a READDIR(PLUS) reply's size besides entries:
	// status, dir post_op_attr, verifier, list end, eof.
	readdirOverhead = 4 + 4 + fattr3Len + 8 + 4 + 4
	// maxReaddirReply bounds maxcount, whatever the client asks.
	maxReaddirReply = 1 << 20
	// maxReaddirBatch bounds the entries asked of vfs at once.
	maxReaddirBatch = 4096
)

func (c *conn) readdir(cl *call, w *xdrWriter) error     { return c.list(cl, w, false) }
func (c *conn) readdirplus(cl *call, w *xdrWriter) error { return c.list(cl, w, true) }

// entryLen is the encoded size of one entry3 or entryplus3.
func entryLen(name string, plus bool, fhLen int) int {
	n := 4 + 8 + opaqueLen(len(name)) + 8
	if plus {
		n += 4 + fattr3Len + 4 + opaqueLen(fhLen)
	}
	return n
}

func (c *conn) list(cl *call, w *xdrWriter, plus bool) error {
	r := xdrReader{b: cl.args}
	dir, err, garbage := c.node(&r)
	cookie := r.u64()
	r.fixed(8) // cookie verifier: see above
	if plus {
		r.u32() // dircount
	}
	maxcount := r.u32()
	if garbage != nil || r.err != nil {
		return errGarbage
	}
	if err == nil && !dir.IsDir() {
		err = &vfs.Error{Op: "readdir", Errno: syscall.ENOTDIR}
	}
	if err != nil {
		w.u32(statusOf(err))
		c.postOpAttr(w, dir)
		return nil
	}
	if maxcount < readdirOverhead {
		// Not even an empty listing fits.
		w.u32(nfs3ErrTooSmall)
		c.postOpAttr(w, dir)
		return nil
	}
	budget := int(min(maxcount, maxReaddirReply)) - readdirOverhead // ≥ 0
	head := len(w.b)
	w.u32(nfs3OK)
	c.postOpAttr(w, dir)
	w.u64(c.s.fs.Attr(dir).Ino) // cookie verifier
	entries := 0
	add := func(name string, n vfs.Node, ck uint64, attrs bool) bool {
		var fh []byte
		if plus && attrs {
			// Only directories are remembered: a listing's files would
			// push everything else out of the handle cache.
			if n.IsDir() {
				fh = c.s.handOut(n)
			} else {
				fh = n.Handle()
			}
		}
		size := entryLen(name, plus, len(fh))
		if plus && !attrs {
			size -= fattr3Len + opaqueLen(len(fh))
		}
		if size > budget {
			return false
		}
		budget -= size
		entries++
		w.bool(true)
		w.u64(c.s.fs.Attr(n).Ino)
		w.string(name)
		w.u64(ck)
		if plus {
			if attrs {
				c.postOpAttr(w, n)
				w.bool(true)
				w.opaque(fh)
			} else {
				w.bool(false)
				w.bool(false)
			}
		}
		return true
	}
	// Fill the budget; eof once vfs has no more.
	eof := false
	full := false
	if cookie < cookieDot {
		full = !add(".", dir, cookieDot, true)
	}
	if !full && cookie < cookieDotDot {
		// The parent is not known (content handles); ".." carries the
		// directory's own number and no attributes or handle.
		full = !add("..", dir, cookieDotDot, false)
	}
	vcookie := uint64(0)
	if cookie > cookieDotDot {
		vcookie = cookie - cookieDotDot
	}
	// The loop ends: batch is at least 1, so an empty answer is eof, and
	// every other round adds batch entries of at least 24 bytes each to a
	// reply whose budget is at most maxReaddirReply.
	for !full {
		// Ask vfs for about as many entries as can fit, and at least one.
		batch := min(budget/entryLen("", plus, vfs.MaxHandleLen)+1, maxReaddirBatch)
		es, err := c.s.fs.ReadDir(c.s.ctx, dir, vcookie, batch)
		if err != nil {
			w.b = w.b[:head]
			w.u32(statusOf(err))
			c.postOpAttr(w, dir)
			return nil
		}
		for _, e := range es {
			if e.Cookie > math.MaxUint64-cookieDotDot {
				// A root cookie so high that the NFS cookie would wrap
				// to "." (see vfs/doc.go): the client would list forever.
				c.log.Error("nfs: directory cookie too large for an NFS cookie", "cookie", e.Cookie, "name", e.Name)
				w.b = w.b[:head]
				w.u32(nfs3ErrIO)
				c.postOpAttr(w, dir)
				return nil
			}
			if !add(e.Name, e.Node, e.Cookie+cookieDotDot, true) {
				full = true
				break
			}
			vcookie = e.Cookie
		}
		if !full && len(es) < batch {
			eof = true
			break
		}
	}
	if entries == 0 && !eof {
		w.b = w.b[:head]
		w.u32(nfs3ErrTooSmall)
		c.postOpAttr(w, dir)
		return nil
	}
	w.bool(false) // no more entries in this reply
	w.bool(eof)
	return nil
}

func (c *conn) fsstat(cl *call, w *xdrWriter) error {
	return c.oneHandle(cl, w, true, func(n vfs.Node) error {
		st := c.s.fs.Statfs()
		w.u32(nfs3OK)
		c.postOpAttr(w, n)
		w.u64(st.Blocks * uint64(st.BlockSize)) // tbytes (0: not known)
		w.u64(0)                                // fbytes
		w.u64(0)                                // abytes
		w.u64(st.Files)                         // tfiles
		w.u64(0)                                // ffiles
		w.u64(0)                                // afiles
		w.u32(^uint32(0))                       // invarsec: nothing ever changes
		return nil
	})
}

// fsinfo properties: symlinks, homogeneous PATHCONF; no hard links to
// make, no times to set.
const fsinfoProperties = 0x0002 | 0x0008

// wtmax is FSINFO's write size: writes fail anyway, so keep their records
// far below MaxRecordSize.
const wtmax = 64 << 10

func (c *conn) fsinfo(cl *call, w *xdrWriter) error {
	return c.oneHandle(cl, w, true, func(n vfs.Node) error {
		w.u32(nfs3OK)
		c.postOpAttr(w, n)
		w.u32(c.s.opts.MaxRead) // rtmax
		w.u32(c.s.opts.MaxRead) // rtpref
		w.u32(4096)             // rtmult
		w.u32(wtmax)            // wtmax
		w.u32(wtmax)            // wtpref
		w.u32(4096)             // wtmult
		w.u32(c.s.opts.MaxRead) // dtpref
		w.u64(1<<63 - 1)        // maxfilesize
		w.u32(1)                // time_delta: times are whole seconds
		w.u32(0)
		w.u32(fsinfoProperties)
		return nil
	})
}

func (c *conn) pathconf(cl *call, w *xdrWriter) error {
	return c.oneHandle(cl, w, true, func(n vfs.Node) error {
		w.u32(nfs3OK)
		c.postOpAttr(w, n)
		w.u32(2)                      // linkmax: the most links any node has
		w.u32(storeclient.MaxNameLen) // name_max
		w.bool(true)                  // no_trunc: long names are refused
		w.bool(true)                  // chown_restricted: no one may chown
		w.bool(false)                 // case_insensitive
		w.bool(true)                  // case_preserving
		return nil
	})
}

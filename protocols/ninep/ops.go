package ninep

import (
	"context"
	"math"
	"strings"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// Linux dirent types (DT_* in dirent.h), which Rreaddir carries.
const (
	dtDir = 4
	dtReg = 8
	dtLnk = 10
)

// QID types.
const (
	qtDir     = 0x80
	qtSymlink = 0x02
	qtFile    = 0
)

// v9fsMagic is V9FS_MAGIC, the f_type Linux reports for 9P mounts.
const v9fsMagic = 0x01021997

// Offsets of the "." and ".." entries a directory listing starts with. A
// vfs cookie c is sent as c+dotEntries, so the offset of every entry resumes
// the listing right after it.
const dotEntries = 2

// direntFixedSize is the size of a Linux 9P dirent without its name: qid[13]
// offset[8] type[1] name length[2].
const direntFixedSize = qidSize + 8 + 1 + 2

// attrValid is the Rgetattr valid mask: mode, nlink, uid, gid, rdev, atime,
// mtime, ctime, ino, size and blocks (P9_GETATTR_BASIC).
const attrValid = 0x7ff

// attrSize is the size of Rgetattr's attributes after valid and qid.
const attrSize = 3*4 + 15*8

// openTrunc is P9_DOTL_TRUNC, O_TRUNC in Tlopen's flags; the access mode
// is its low two bits (0: read-only).
const (
	openTrunc      = 0o1000
	openAccessMode = 3
)

// handle answers one request from vfs. A panic in it answers EIO, logged
// at Error: it unwound only this request, whose state is its own.
func (c *conn) handle(ctx context.Context, r *request) (res result) {
	var held *fid // released here if the request panics
	defer func() {
		if v := recover(); v != nil {
			c.panics.log("ninep: panic in a request; answered EIO", msgName(r.typ), v)
			if held != nil {
				c.release(held)
			}
			res = result{err: errPanic}
		}
	}()
	if r.typ == tTattach {
		return c.attach(ctx, r)
	}
	f := c.getFid(r.fid)
	if f == nil {
		return result{err: errBadFid}
	}
	held = f
	switch r.typ {
	case tTclunk:
		held = nil
		c.release(f)
		c.remove(r.fid)
		return result{msg: newReply(tTclunk+1, r.tag, 0).done(0)}
	case tTremove:
		held = nil
		c.release(f)
		c.remove(r.fid)
		return result{err: refusal("remove")}
	case tTread:
		res = c.read(f, r)
	case tTreaddir:
		res = c.readdir(ctx, f, r)
	default:
		res = c.op(ctx, f, r)
	}
	held = nil
	if res.done == nil {
		res.done = func() { c.release(f) }
	} else {
		done := res.done
		res.done = func() { done(); c.release(f) }
	}
	return res
}

// op answers the requests that neither read data nor end a fid.
func (c *conn) op(ctx context.Context, f *fid, r *request) result {
	fs := c.srv.fs
	switch r.typ {
	case tTwalk, tTwalkgetattr:
		return c.walk(ctx, f, r)
	case tTgetattr:
		e := newReply(tTgetattr+1, r.tag, 8+qidSize+attrSize)
		e.u64(attrValid)
		e.qid(qidOf(f.e.node))
		c.attr(e, f.e.node)
		return result{msg: e.done(0)}
	case tTstatfs:
		st := fs.Statfs()
		e := newReply(tTstatfs+1, r.tag, 60)
		e.u32(v9fsMagic)
		e.u32(st.BlockSize)
		e.u64(st.Blocks)
		e.u64(0) // free
		e.u64(0) // available
		e.u64(st.Files)
		e.u64(0) // free files
		e.u64(0) // fsid
		e.u32(st.NameMax)
		return result{msg: e.done(0)}
	case tTlopen:
		return c.open(ctx, f, r)
	case tTreadlink:
		s, err := fs.Readlink(f.e.node)
		if err != nil {
			return result{err: errnoOf(err)}
		}
		e := newReply(tTreadlink+1, r.tag, 2+len(s))
		e.str(s)
		return result{msg: e.done(0)}
	case tTxattrwalk:
		return c.xattrwalk(f, r)
	case tTfsync:
		return result{msg: newReply(tTfsync+1, r.tag, 0).done(0)}
	case tTlock: // advisory locks always succeed: nobody can write
		e := newReply(tTlock+1, r.tag, 1)
		e.u8(0)
		return result{msg: e.done(0)}
	}
	return result{err: errUnknownType}
}

// qidOf returns a node's 9P identity: qid.path is the vfs inode number
// (stable across restarts and daemons), version 0 (content never changes).
func qidOf(n vfs.Node) qid {
	t := uint8(qtFile)
	switch n.Kind() {
	case storeclient.KindDirectory:
		t = qtDir
	case storeclient.KindSymlink:
		t = qtSymlink
	}
	return qid{typ: t, path: n.Ino()}
}

// direntType returns the Linux DT_* type of a node.
func direntType(n vfs.Node) uint8 {
	switch n.Kind() {
	case storeclient.KindDirectory:
		return dtDir
	case storeclient.KindSymlink:
		return dtLnk
	}
	return dtReg
}

// attr appends a node's attributes as Rgetattr carries them after its
// qid: mode uid gid nlink rdev size blksize blocks, atime mtime ctime btime
// (seconds and nanoseconds), gen, data_version.
func (c *conn) attr(e *encoder, n vfs.Node) {
	fs := c.srv.fs
	a := fs.Attr(n)
	sec, nsec := uint64(a.Mtime.Unix()), uint64(a.Mtime.Nanosecond())
	e.u32(a.UnixMode())
	e.u32(a.UID)
	e.u32(a.GID)
	e.u64(uint64(a.Nlink))
	e.u64(0) // rdev
	e.u64(a.Size)
	e.u64(uint64(fs.Statfs().BlockSize))
	e.u64(a.Blocks)
	for range 3 { // atime, mtime, ctime
		e.u64(sec)
		e.u64(nsec)
	}
	e.u64(0) // btime
	e.u64(0)
	e.u64(0) // gen
	e.u64(0) // data_version
}

// attach answers Tattach: any uname and n_uname; the aname selects the
// export, "" or "/" the store root, a path below it that subtree (walked
// as a Twalk from the store root, so ".." cannot leave it). The fid's
// walks never go above the entry it stands at.
func (c *conn) attach(ctx context.Context, r *request) result {
	fs := c.srv.fs
	n := fs.Root()
	var path []vfs.Node
	for name := range strings.SplitSeq(r.name, "/") {
		switch name {
		case "", ".":
			continue
		case "..":
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
		default:
			cur := n
			if len(path) > 0 {
				cur = path[len(path)-1]
			}
			next, err := fs.Lookup(ctx, cur, name)
			if err != nil {
				return result{err: errnoOf(err)}
			}
			path = append(path, next)
		}
	}
	if len(path) > 0 {
		n = path[len(path)-1]
	}
	if en := c.install(r.newFid, &entry{node: n}, false, nil); en != 0 {
		return result{err: en}
	}
	e := newReply(tTattach+1, r.tag, qidSize)
	e.qid(qidOf(n))
	return result{msg: e.done(0)}
}

// walk answers Twalk (and Twalkgetattr): every name must resolve, or the
// walk fails with the first name's error and makes no fid. "." stays, ".."
// goes to the parent on the fid's walk path, never above its attach root.
func (c *conn) walk(ctx context.Context, f *fid, r *request) result {
	fs := c.srv.fs
	cur := f.e
	qids := make([]qid, 0, len(r.names))
	for _, name := range r.names {
		var next *entry
		switch name {
		case ".", "..":
			if !cur.node.IsDir() {
				return result{err: notDir(name)}
			}
			next = &entry{node: cur.node, parent: cur.parent}
			if p := cur.parent; name == ".." && p != nil {
				next = &entry{node: p.node, parent: p.parent}
			}
		default:
			n, err := fs.Lookup(ctx, cur.node, name)
			if err != nil {
				return result{err: errnoOf(err)}
			}
			next = &entry{node: n, parent: cur}
		}
		qids = append(qids, qidOf(next.node))
		cur = next
	}
	if len(r.names) == 0 { // a clone: a sibling of the source's entry
		cur = &entry{node: cur.node, parent: cur.parent}
	}
	if en := c.install(r.newFid, cur, false, nil); en != 0 {
		return result{err: en}
	}
	if r.typ == tTwalkgetattr {
		e := newReply(tTwalkgetattr+1, r.tag, 8+attrSize+2+len(qids)*qidSize)
		e.u64(attrValid)
		c.attr(e, cur.node)
		e.u16(uint16(len(qids)))
		for _, q := range qids {
			e.qid(q)
		}
		return result{msg: e.done(0)}
	}
	e := newReply(tTwalk+1, r.tag, 2+len(qids)*qidSize)
	e.u16(uint16(len(qids)))
	for _, q := range qids {
		e.qid(q)
	}
	return result{msg: e.done(0)}
}

// open answers Tlopen. Opening for writing (or truncation) is EROFS;
// directories open for Treaddir; regular files open their blob. iounit is
// 0 so that Linux sizes reads by msize.
func (c *conn) open(ctx context.Context, f *fid, r *request) result {
	if r.flags&openAccessMode != 0 || r.flags&openTrunc != 0 {
		return result{err: errnoOf(vfs.ReadOnly("open", ""))}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened || f.isAttr {
		return result{err: errAlreadyOpen}
	}
	if !f.e.node.IsDir() {
		h, err := c.srv.fs.Open(ctx, f.e.node)
		if err != nil {
			return result{err: errnoOf(err)}
		}
		f.file = h
	}
	f.opened = true
	e := newReply(tTlopen+1, r.tag, qidSize+4)
	e.qid(qidOf(f.e.node))
	e.u32(0)
	return result{msg: e.done(0)}
}

// xattrwalk answers Txattrwalk: a new fid holding the value of the named
// attribute (or, for no name, the list of names, each NUL-terminated) for
// Treads, and its size.
func (c *conn) xattrwalk(f *fid, r *request) result {
	fs := c.srv.fs
	var val []byte
	if r.name == "" {
		for _, name := range fs.Xattrs(f.e.node) {
			val = append(append(val, name...), 0)
		}
	} else {
		size, err := fs.Getxattr(f.e.node, r.name, nil)
		if err != nil {
			return result{err: errnoOf(err)}
		}
		val = make([]byte, size)
		if size > 0 {
			if size, err = fs.Getxattr(f.e.node, r.name, val); err != nil {
				return result{err: errnoOf(err)}
			}
		}
		val = val[:size]
	}
	if en := c.install(r.newFid, &entry{node: f.e.node}, true, val); en != 0 {
		return result{err: en}
	}
	e := newReply(tTxattrwalk+1, r.tag, 8)
	e.u64(uint64(len(val)))
	return result{msg: e.done(0)}
}

// readdir answers Treaddir: entries after offset, as many as fit in count
// bytes. Offsets 0, 1 and 2 start before ".", before ".." and before the
// first entry; every other offset is a vfs cookie plus 2, so a listing
// resumes exactly after the last entry the client received, however the
// client sizes its reads.
func (c *conn) readdir(ctx context.Context, f *fid, r *request) result {
	f.mu.Lock()
	opened := f.opened
	f.mu.Unlock()
	if !opened || !f.e.node.IsDir() {
		return result{err: errNotOpen}
	}
	fs := c.srv.fs
	count, offset := r.count, r.off
	e := newReply(tTreaddir+1, r.tag, 4+int(min(count, 64<<10)))
	e.u32(0) // count, set below
	used, entries := uint32(0), 0
	add := func(q qid, off uint64, typ uint8, name string) bool {
		size := direntFixedSize + uint32(len(name))
		if used+size > count {
			return false
		}
		used += size
		entries++
		e.qid(q)
		e.u64(off)
		e.u8(typ)
		e.str(name)
		return true
	}
	self := qidOf(f.e.node)
	if offset == 0 && !add(self, 1, dtDir, ".") {
		return result{err: errCountTooSmall}
	}
	if offset <= 1 {
		parent := self
		if p := f.e.parent; p != nil {
			parent = qidOf(p.node)
		}
		if !add(parent, 2, dtDir, "..") {
			return c.direntReply(e, used)
		}
	}
	cookie := uint64(0)
	if offset > dotEntries {
		cookie = offset - dotEntries
	}
	// Every entry takes at least direntFixedSize+1 bytes: ask vfs for no
	// more than can fit.
	limit := int((count-used)/(direntFixedSize+1)) + 1
	es, err := fs.ReadDir(ctx, f.e.node, cookie, limit)
	if err != nil {
		return result{err: errnoOf(err)}
	}
	for _, de := range es {
		if de.Cookie > math.MaxUint64-dotEntries {
			c.log.Error("ninep: directory cookie too large for a 9P offset", "cookie", de.Cookie, "name", de.Name)
			return result{err: errCookieOverflow}
		}
		if !add(qidOf(de.Node), de.Cookie+dotEntries, direntType(de.Node), de.Name) {
			break
		}
	}
	if entries == 0 && len(es) > 0 {
		return result{err: errCountTooSmall}
	}
	return c.direntReply(e, used)
}

// direntReply finishes an Rreaddir of used bytes of entries.
func (c *conn) direntReply(e *encoder, used uint32) result {
	e.b[headerSize] = byte(used)
	e.b[headerSize+1] = byte(used >> 8)
	e.b[headerSize+2] = byte(used >> 16)
	e.b[headerSize+3] = byte(used >> 24)
	return result{msg: e.done(0)}
}

package ninep

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/storefs/storefs/vfs"
)

// Fids and their walk paths.
//
// Each fid stands at an entry: a vfs node and the entry it was walked from,
// back to the entry its Tattach made (the attach root, parent nil). A walk
// of ".." goes to the parent entry, never above the attach root; "." stays.
// Entries are shared: a fid walked from another holds its source's entry as
// the parent of its first new one. Every name a walk passes through makes
// one entry (a walk of no names, a clone, makes one too: a sibling of the
// source's), and an entry lives while a fid stands at it or below it.
// Options.MaxFids and MaxServerFids bound the entries held, so they bound
// a connection's memory however its fids were made.

// fidFloor is how many entries every connection may hold whatever the
// server's count: connections that hold many cannot lock out one that
// holds a few (a new mount). The server's entries are thus at most
// MaxServerFids plus fidFloor per connection (netguard bounds those).
const fidFloor = 1024

// entry is one step of a walk path. node and parent never change; refs (the
// fids standing at it and the entries below it) is guarded by conn.mu, and
// is 0 until the walk that made the entry is committed.
type entry struct {
	node   vfs.Node
	parent *entry
	refs   int32
}

// fid is one fid of a connection.
type fid struct {
	e *entry
	// refs counts the fid table's reference and each request using the
	// fid; the last release closes what the fid opened.
	refs atomic.Int32

	mu     sync.Mutex
	opened bool      // Tlopen succeeded
	file   *vfs.File // an opened regular file
	xattr  []byte    // an xattr fid's value (or name list), read with Tread
	isAttr bool      // an xattr fid
	// blob and blobSize cache the size of the local file of file's reads
	// (vfs.ReadResult.File), checked before a range of it goes out with
	// sendfile.
	blob     *os.File
	blobSize int64
}

// fidBudget is the count of entries of all of a Server's connections, with
// its bound.
type fidBudget struct {
	n   atomic.Int64
	max int64
}

// reserve counts n more entries if the total stays within the bound once
// credit are freed.
func (b *fidBudget) reserve(n, credit int) bool {
	if b.n.Add(int64(n))-int64(credit) > b.max {
		b.n.Add(-int64(n))
		return false
	}
	return true
}

// freshEntries returns how many entries holding e would count, e and its
// ancestors that no one holds yet (made by the walk being committed), and
// the first ancestor that is held.
func freshEntries(e *entry) (int, *entry) {
	n := 0
	for ; e != nil && e.refs == 0; e = e.parent {
		n++
	}
	return n, e
}

// freeableEntries returns how many entries dropping e would free: e and
// its ancestors that nothing else holds, up to keep (which a new walk path
// holds).
func freeableEntries(e, keep *entry) int {
	n := 0
	for ; e != nil && e.refs == 1 && e != keep; e = e.parent {
		n++
	}
	return n
}

// holdLocked takes a reference on e for a fid, counting e's fresh entries
// in the connection's (the caller counts them in the server's). c.mu is
// held.
func (c *conn) holdLocked(e *entry) {
	for ; e != nil; e = e.parent {
		e.refs++
		if e.refs > 1 {
			return // held already, and so are its ancestors
		}
		c.entries++
	}
}

// dropLocked drops a fid's reference on e, freeing it and the ancestors
// only it held. c.mu is held.
func (c *conn) dropLocked(e *entry) {
	for ; e != nil; e = e.parent {
		if e.refs--; e.refs > 0 {
			return
		}
		c.entries--
		c.srv.fids.n.Add(-1)
	}
}

// getFid returns fid number n with a reference the caller releases, or
// nil.
func (c *conn) getFid(n uint32) *fid {
	c.mu.Lock()
	f := c.fids[n]
	if f != nil {
		f.refs.Add(1)
	}
	c.mu.Unlock()
	return f
}

// release drops a reference to f; the last closes its file and drops its
// entries.
func (c *conn) release(f *fid) {
	if f.refs.Add(-1) != 0 {
		return
	}
	c.mu.Lock()
	c.dropLocked(f.e)
	c.mu.Unlock()
	if f.file != nil {
		c.closeFile(f.file)
	}
}

// closeFile closes a fid's vfs.File; a panic in it is logged, not passed
// on (it runs when a connection ends, outside any request).
func (c *conn) closeFile(h *vfs.File) {
	defer func() {
		if v := recover(); v != nil {
			c.panics.log("ninep: panic in a request; answered EIO", "Tclunk", v)
		}
	}()
	h.Close()
}

// install makes fid number n stand at e, replacing whatever fid n was,
// unless the connection or the server would hold too many entries: then it
// answers EMFILE. e's fresh entries (see freshEntries) are counted from
// here on.
func (c *conn) install(n uint32, e *entry, attrFid bool, xattr []byte) errno {
	c.mu.Lock()
	old := c.fids[n]
	fresh, keep := freshEntries(e)
	credit := 0
	if old != nil && old.refs.Load() == 1 { // else a request still uses it
		credit = freeableEntries(old.e, keep)
	}
	held := c.entries + fresh - credit
	if held > c.srv.opts.MaxFids {
		c.fidLimitLocked("ninep: fid limit of the connection reached; answering EMFILE", "max_fids", c.srv.opts.MaxFids)
		c.mu.Unlock()
		return errTooManyFids
	}
	if held > fidFloor {
		if !c.srv.fids.reserve(fresh, credit) {
			c.fidLimitLocked("ninep: fid limit of the server reached; answering EMFILE", "max_server_fids", c.srv.opts.MaxServerFids)
			c.mu.Unlock()
			return errTooManyFids
		}
	} else {
		c.srv.fids.n.Add(int64(fresh))
	}
	f := &fid{e: e, isAttr: attrFid, xattr: xattr}
	f.refs.Store(1)
	c.holdLocked(e)
	c.fids[n] = f
	c.mu.Unlock()
	if old != nil {
		c.release(old)
	}
	return 0
}

// fidLimitLocked logs a fid limit, once per connection: a client may ask
// again and again.
func (c *conn) fidLimitLocked(msg, key string, limit int) {
	if !c.fidLimitLogged {
		c.fidLimitLogged = true
		c.log.Warn(msg, key, limit)
	}
}

// remove takes fid n out of the table (Tclunk, Tremove); it reports
// whether there was one. The fid's file is closed once requests still
// using it are done.
func (c *conn) remove(n uint32) bool {
	c.mu.Lock()
	f := c.fids[n]
	delete(c.fids, n)
	c.mu.Unlock()
	if f == nil {
		return false
	}
	c.release(f)
	return true
}

// releaseAll drops every fid of a connection that ended; no request is in
// flight.
func (c *conn) releaseAll() {
	c.mu.Lock()
	fids := c.fids
	c.fids = make(map[uint32]*fid)
	c.mu.Unlock()
	for _, f := range fids {
		c.release(f)
	}
}

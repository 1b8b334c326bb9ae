package ninep

import (
	"strings"
	"sync/atomic"
)

// Fid accounting. What a fid costs is the p9 library's: it keeps a fidRef
// (and the File it wraps, and entries in its path tree) for every name a
// walk passed through, each holding its parent, so a fid made by a Twalk
// of 16 names holds 16 of them until it and every fid walked from it are
// clunked. The wire layer mirrors that graph (libRef, 16 bytes each) from
// the requests and replies it sees, so that Options.MaxFids and
// MaxServerFids bound the library's references themselves, not merely
// the fid numbers: about 0.4 KiB of heap each (see Options.MaxFids).
//
// The mirror is exact because the wire layer orders what could make it
// differ from the library's: a request that re-makes or clunks a fid
// waits until no other request that uses or changes that fid is in
// flight (fidUse), and a walk holds its source fid's libRef from the
// moment it is read, as the library holds the fidRef from its lookup.
// Linux never has two such requests on one fid in flight, so it never
// waits.

// fidFloor is how many references every connection may hold whatever the
// server's count: connections that hold many cannot lock out one that
// holds a few (a new mount). The server's references are thus at most
// MaxServerFids plus fidFloor per connection (netguard bounds those).
const fidFloor = 1024

// libRef mirrors one p9 fidRef: its parent and its reference count (the
// fid table's, its children's and in-flight walks').
type libRef struct {
	parent *libRef
	refs   int32
}

// fidUse counts the requests in flight that use a fid: walks from it
// (which read its libRef), and requests that change it (make it anew,
// clunk or remove it).
type fidUse struct{ walks, changes int32 }

// fidBudget is the count of library references of all of a Server's
// connections, with its bound.
type fidBudget struct {
	n   atomic.Int64
	max int64
}

// reserve counts n more references if the total stays within the bound
// once credit are freed.
func (b *fidBudget) reserve(n, credit int) bool {
	if b.n.Add(int64(n))-int64(credit) > b.max {
		b.n.Add(-int64(n))
		return false
	}
	return true
}

// newRefs reports how many library references request req makes if it
// succeeds: one per name walked (one for a walk of none, which clones the
// fid), the root and one per component of a Tattach's aname, one for an
// xattr fid.
func newRefs(typ uint8, names int, aname []byte) int {
	switch typ {
	case tTattach:
		// As p9 does: one leading "/" is dropped, the rest split at "/".
		a := string(aname)
		a = strings.TrimPrefix(a, "/")
		if a == "" {
			return 1
		}
		return 2 + strings.Count(a, "/")
	case tTwalk, tTwalkgetattr:
		return max(names, 1)
	}
	return 1 // Txattrwalk
}

// walksFrom reports whether a request of type typ walks from its fid.
func walksFrom(typ uint8) bool {
	return typ == tTwalk || typ == tTwalkgetattr || typ == tTxattrwalk
}

// conflictLocked reports whether req must wait for requests in flight on
// its fids (see above). c.mu is held.
func (c *wireConn) conflictLocked(req *request) bool {
	if c.versioning {
		// The library sets the session up (its msize, its read
		// buffers) while it handles Tversion, concurrently with what
		// follows: a Tread handled first found no read buffers.
		return true
	}
	if req.newFid != noFid {
		if u := c.fidUse[req.newFid]; u.walks > 0 || u.changes > 0 {
			return true
		}
	}
	if walksFrom(req.typ) || req.typ == tTclunk || req.typ == tTremove {
		return c.fidUse[req.fid].changes > 0
	}
	return false
}

// useLocked marks (d = 1) or unmarks (d = -1) the fids req uses.
func (c *wireConn) useLocked(req *request, d int32) {
	mark := func(fid uint32, walks, changes int32) {
		u := c.fidUse[fid]
		u.walks += walks
		u.changes += changes
		if u == (fidUse{}) {
			delete(c.fidUse, fid)
		} else {
			c.fidUse[fid] = u
		}
	}
	if walksFrom(req.typ) {
		mark(req.fid, d, 0)
	}
	if req.newFid != noFid {
		mark(req.newFid, 0, d)
	}
	if req.typ == tTclunk || req.typ == tTremove {
		mark(req.fid, 0, d)
	}
}

// freeableLocked returns how many references dropping r would free: r and
// its ancestors that nothing else holds.
func freeableLocked(r *libRef) int {
	n := 0
	for ; r != nil && r.refs == 1; r = r.parent {
		n++
	}
	return n
}

// newRefLocked makes a reference with one count (its holder's), whose
// parent's count the caller has already taken.
func (c *wireConn) newRefLocked(parent *libRef) *libRef {
	c.refs++
	c.budget.n.Add(1)
	return &libRef{parent: parent, refs: 1}
}

// dropLocked drops one count of r, freeing it and the ancestors only it
// held.
func (c *wireConn) dropLocked(r *libRef) {
	for r != nil {
		if r.refs--; r.refs > 0 {
			return
		}
		c.refs--
		c.budget.n.Add(-1)
		r = r.parent
	}
}

// madeLocked mirrors a successful request that made req.newFid.
func (c *wireConn) madeLocked(req *request) {
	var ref *libRef
	switch {
	case req.typ == tTattach:
		for range req.charge {
			ref = c.newRefLocked(ref)
		}
	case req.typ == tTxattrwalk:
		ref = c.newRefLocked(nil) // shares the File, not the chain
		c.dropLocked(req.parent)
	case req.names == 0: // a clone: a sibling of the source
		if p := req.parent; p != nil && p.parent != nil {
			p.parent.refs++
		}
		if req.parent != nil {
			ref = c.newRefLocked(req.parent.parent)
		} else {
			ref = c.newRefLocked(nil)
		}
		c.dropLocked(req.parent)
	default: // the walk's hold on the source becomes its first name's parent
		ref = req.parent
		for range req.names {
			ref = c.newRefLocked(ref)
		}
	}
	old := c.fids[req.newFid]
	c.fids[req.newFid] = ref
	c.dropLocked(old)
}

// release gives back the references of a connection that ended: the
// library has dropped them all.
func (c *wireConn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget.n.Add(-int64(c.refs + c.pendingRefs))
	c.refs, c.pendingRefs = 0, 0
	clear(c.fids)
}

package vfs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/storefs/storefs/storeclient"
)

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Node Node // Attr(Node) gives its attributes without a store call (readdirplus)
	// Cookie resumes the listing after this entry: pass it to ReadDir. It is
	// never 0 (0 starts a listing) and grows with the entries' order.
	Cookie uint64
}

// ReadDirAll, as ReadDir's max, asks for every remaining entry.
const ReadDirAll = 0

// ReadDir lists the directory dir in byte order of the names, starting after
// the entry whose Cookie is cookie (0: from the start), at most max entries
// (ReadDirAll: all of them). An empty result means the end. "." and ".." are
// not included; frontends whose clients expect them add them.
//
// A negative max fails with EINVAL rather than meaning "all": it is what a
// frontend's batch arithmetic gives when a client's buffer cannot hold one
// entry, and reading the whole directory then, again and again, is how such
// a frontend used to loop forever.
//
// Below the root, Directories are immutable and the cookie of entry i is
// i+1. The root's set of names can grow while a client lists it, so its
// cookies come from the names themselves: the first 12 nixbase32 characters
// of the basename (60 bits, in the same order as the names), shifted left by
// 4, plus one plus the entry's rank among names sharing those 12 characters.
// Resuming from a cookie therefore never drops or repeats a name, whatever
// was added in between. A cookie-0 read of the root takes a fresh listing
// from the store; later reads resume in the latest one.
//
// Listing the root with ListRoot off fails with EPERM; a dir that is not a
// directory with ENOTDIR; a missing or corrupt Directory with EIO.
func (f *FS) ReadDir(ctx context.Context, dir Node, cookie uint64, max int) ([]DirEntry, error) {
	t0 := f.opStart(OpReadDir)
	es, err := f.readDir(ctx, dir, cookie, max)
	f.opEnd(OpReadDir, t0, 0, err)
	return es, err
}

func (f *FS) readDir(ctx context.Context, dir Node, cookie uint64, max int) ([]DirEntry, error) {
	switch {
	case max < 0:
		return nil, newError("readdir", "", syscall.EINVAL, fmt.Errorf("negative entry count %d", max))
	case dir.place == placeRoot:
		return f.readRoot(ctx, cookie, max)
	case dir.place == placeInvalid:
		return nil, newError("readdir", "", syscall.EINVAL, errors.New("invalid node"))
	case dir.node.Kind() != storeclient.KindDirectory:
		return nil, newError("readdir", "", syscall.ENOTDIR, nil)
	}
	d, err := f.directory(ctx, "readdir", dir.node)
	if err != nil {
		return nil, err
	}
	es := d.Entries()
	if cookie >= uint64(len(es)) {
		return nil, nil
	}
	es = es[cookie:]
	if max != ReadDirAll && len(es) > max {
		es = es[:max]
	}
	out := make([]DirEntry, len(es))
	for i, e := range es {
		idx := int(cookie) + i
		out[i] = DirEntry{Name: string(e.Name), Node: childNode(dir.node, idx, e.Node), Cookie: uint64(idx) + 1}
	}
	return out, nil
}

// rootEntry is one name of a root listing snapshot.
type rootEntry struct {
	name   string
	cookie uint64
	node   Node
}

// rootCookiePrefix is how many leading nixbase32 characters of a basename
// make up a root cookie: 12 * 5 = 60 bits, leaving 4 bits for the rank.
const rootCookiePrefix = 12

// RootCookie returns the cookie of the root entry called basename, assuming
// no other name shares its first 12 characters (rank 0). Frontends need it
// only to check a client's cookie; ReadDir returns the exact one.
func RootCookie(basename string) uint64 { return rootCookieKey(basename)<<4 + 1 }

// rootCookieKey is the 60-bit value of the first 12 nixbase32 characters of
// a basename. nixbase32's alphabet is in ASCII order, so the key orders as
// the names do.
func rootCookieKey(basename string) uint64 {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var k uint64
	for i := 0; i < rootCookiePrefix && i < len(basename); i++ {
		k = k<<5 | uint64(strings.IndexByte(alphabet, basename[i])&31)
	}
	return k
}

func (f *FS) readRoot(ctx context.Context, cookie uint64, max int) ([]DirEntry, error) {
	if !f.opts.ListRoot {
		return nil, newError("readdir", "/", syscall.EPERM, errors.New("listing the root is off (list_root: false)"))
	}
	f.rootMu.Lock()
	snap := f.rootSnap
	f.rootMu.Unlock()
	if cookie == 0 || snap == nil {
		var err error
		if snap, err = f.listRoots(ctx); err != nil {
			return nil, err
		}
		f.rootMu.Lock()
		f.rootSnap = snap
		f.rootMu.Unlock()
	}
	i, _ := slices.BinarySearchFunc(snap, cookie, func(e rootEntry, c uint64) int {
		switch {
		case e.cookie <= c:
			return -1
		default:
			return 1
		}
	})
	snap = snap[i:]
	if max != ReadDirAll && len(snap) > max {
		snap = snap[:max]
	}
	out := make([]DirEntry, len(snap))
	for i, e := range snap {
		out[i] = DirEntry{Name: e.name, Node: e.node, Cookie: e.cookie}
	}
	return out, nil
}

// listRoots reads every PathInfo and returns the sorted root listing.
func (f *FS) listRoots(ctx context.Context) (snap []rootEntry, err error) {
	defer f.recoverStore(BackendListPathInfos, &err) // Errno maps its error to EIO
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	for pi, err := range f.store.ListPathInfos(ctx) {
		if err != nil {
			f.backendEnd(BackendListPathInfos, t0, err)
			return nil, backendError("readdir", "/", err)
		}
		name := pi.StorePath.Basename()
		snap = append(snap, rootEntry{name: name, node: topNode(pi.StorePath.Digest, pi.Node)})
	}
	f.backendEnd(BackendListPathInfos, t0, nil)
	slices.SortFunc(snap, func(a, b rootEntry) int { return strings.Compare(a.name, b.name) })
	snap = slices.CompactFunc(snap, func(a, b rootEntry) bool { return a.name == b.name })
	var rank uint64
	for i := range snap {
		key := rootCookieKey(snap[i].name)
		if i > 0 && key == rootCookieKey(snap[i-1].name) {
			rank = min(rank+1, 14)
		} else {
			rank = 0
		}
		snap[i].cookie = key<<4 + rank + 1
	}
	return snap, nil
}

package vfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/storefs/storefs/storeclient"
)

// FS is the read-only filesystem over one store. All its methods may be
// called concurrently. It starts no goroutines of its own that outlive a
// call, holds no resources beyond bounded caches, and needs no Close; the
// caller owns and closes the store.
//
// FS.View returns further FS values over the same state, labelled for an
// Observer.
type FS struct {
	*fsState
	protocol string // the View label reported to Options.Observer
}

// fsState is what every view of an FS shares.
type fsState struct {
	store     storeclient.Store
	storeName string // for log lines
	opts      Options
	trusted   bool
	log       *slog.Logger

	dirs      *lru.Cache[storeclient.Digest, *cachedDir]
	dirFlight singleflight.Group

	// remote holds the bao outboards and verified chunk groups of remote
	// blobs; spool the remote blobs without an outboard (see source.go).
	remote       *byteCache[any]
	remoteFlight singleflight.Group
	spool        *spool

	// open counts the open Files of each remote blob.
	openMu sync.Mutex
	open   map[storeclient.Digest]int

	// stalled remembers when a blob's backend last timed out.
	stalled *lru.Cache[storeclient.Digest, time.Time]

	// reported remembers when each blob's failure was last logged.
	reportedMu sync.Mutex
	reported   *lru.Cache[string, time.Time]

	rootMu   sync.Mutex
	rootSnap []rootEntry // the latest sorted root listing; see readdir.go
}

// cachedDir is a Directory that has been verified against its digest, with
// the sizes a parent may record for it.
type cachedDir struct {
	dir        *storeclient.Directory
	legacySize uint64
	legacyOK   bool
}

// New returns an FS over store. A store that is not trusted local data
// (storeclient.IsTrustedLocal) gets every blob and Directory verified
// against its digest before anything that depends on it is served.
func New(store storeclient.Store, opts Options) (*FS, error) {
	opts = opts.withDefaults()
	dirs, err := lru.New[storeclient.Digest, *cachedDir](opts.DirectoryCacheSize)
	if err != nil {
		return nil, fmt.Errorf("vfs: directory cache: %w", err)
	}
	reported, err := lru.New[string, time.Time](1024)
	if err != nil {
		return nil, fmt.Errorf("vfs: failure log: %w", err)
	}
	stalled, err := lru.New[storeclient.Digest, time.Time](1024)
	if err != nil {
		return nil, fmt.Errorf("vfs: stall memory: %w", err)
	}
	name := opts.StoreName
	if name == "" {
		name = fmt.Sprintf("%T", store)
	}
	return &FS{fsState: &fsState{
		store:     store,
		storeName: name,
		opts:      opts,
		trusted:   storeclient.IsTrustedLocal(store),
		log:       opts.Logger,
		dirs:      dirs,
		remote:    newByteCache[any](opts.RemoteCacheBytes),
		spool:     newSpool(opts.SpoolDir, opts.SpoolSize),
		reported:  reported,
		stalled:   stalled,
		open:      make(map[storeclient.Digest]int),
	}}, nil
}

// Options returns the options in effect, defaults filled in.
func (f *FS) Options() Options { return f.opts }

// Root returns the root directory.
func (f *FS) Root() Node { return rootNode() }

// getPathInfo asks the store for a PathInfo, bounded by the timeout.
func (f *FS) getPathInfo(ctx context.Context, sp storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	pi, err := storeCall(f.fsState, BackendGetPathInfo, func() (*storeclient.PathInfo, error) { return f.store.GetPathInfo(ctx, sp) })
	f.backendEnd(BackendGetPathInfo, t0, err)
	return pi, err
}

// directory returns the Directory behind a directory node, from the cache or
// the store; verified against its digest (untrusted stores) and against the
// size the parent recorded for it (always). Errors are *Error with EIO; a
// missing Directory wraps storeclient.ErrNotFound.
func (f *FS) directory(ctx context.Context, op string, n storeclient.Node) (*storeclient.Directory, error) {
	d := n.Digest()
	cd, err := f.cachedDirectory(ctx, op, d)
	if err != nil {
		return nil, err
	}
	if !cd.fits(n.Size(), f.opts.LegacySizes) {
		err := &storeclient.ValidationError{Rule: storeclient.RuleSize,
			Detail: fmt.Sprintf("directory %s has size %d but its parent records %d", d, cd.dir.Size(), n.Size())}
		f.log.Error("vfs: corrupt directory: recorded size disagrees", "digest", d.String(), "size", cd.dir.Size(), "recorded", n.Size())
		return nil, backendError(op, d.String(), err)
	}
	return cd.dir, nil
}

// cachedDirectory returns Directory d, verified against its digest, from
// the cache or the store.
func (f *FS) cachedDirectory(ctx context.Context, op string, d storeclient.Digest) (*cachedDir, error) {
	cd, ok := f.dirs.Get(d)
	f.cacheLookup(CacheDirectory, ok)
	if ok {
		return cd, nil
	}
	v, err := shared(ctx, &f.dirFlight, string(d[:]), func(ctx context.Context) (any, error) {
		return f.fetchDirectory(ctx, d)
	})
	if err != nil {
		return nil, backendError(op, d.String(), err)
	}
	return v.(*cachedDir), nil
}

// fits reports whether a parent (or a handle) may record size for the
// Directory: its size, or with legacy sizes allowed its legacy size.
func (cd *cachedDir) fits(size uint64, legacy bool) bool {
	return cd.dir.Size() == size || (legacy && cd.legacyOK && cd.legacySize == size)
}

// shared runs work once for all concurrent callers with the same key and
// gives each its result. The work runs detached from every caller's
// cancellation (it is still bounded by Options.Timeout inside), so one
// caller giving up — a FUSE interrupt, a 9P flush, a closed connection —
// never fails the others; that caller alone stops waiting and gets its
// context's error.
func shared(ctx context.Context, g *singleflight.Group, key string, work func(ctx context.Context) (any, error)) (any, error) {
	detached := context.WithoutCancel(ctx)
	ch := g.DoChan(key, func() (v any, err error) {
		// singleflight re-panics a panic of DoChan's work in a goroutine
		// of its own, where nothing can recover it: stop it here.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic in shared work %x: %v\n%s", key, p, debug.Stack())
			}
		}()
		return work(detached)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		return r.Val, r.Err
	}
}

func (f *FS) fetchDirectory(ctx context.Context, d storeclient.Digest) (*cachedDir, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	dir, err := storeCall(f.fsState, BackendGetDirectory, func() (*storeclient.Directory, error) { return f.store.GetDirectory(ctx, d) })
	f.backendEnd(BackendGetDirectory, t0, err)
	if err != nil {
		if errors.Is(err, storeclient.ErrCorrupt) {
			f.log.Error("vfs: corrupt directory", "digest", d.String(), "err", err)
		}
		f.metadataFailed("directory", d.String(), err)
		return nil, err
	}
	if !f.trusted {
		if got := dir.Digest(); got != d {
			f.log.Error("vfs: corrupt directory: digest mismatch", "digest", d.String(), "got", got.String())
			return nil, fmt.Errorf("directory %s: content hashes to %s: %w", d, got, storeclient.ErrCorrupt)
		}
	}
	cd := &cachedDir{dir: dir}
	if ls, err := dir.LegacySize(); err == nil {
		cd.legacySize, cd.legacyOK = ls, true
	}
	f.dirs.Add(d, cd)
	return cd, nil
}

// checkName rejects names no entry can have: empty, ".", "..", containing
// "/" or NUL (ENOENT), longer than 255 bytes (ENAMETOOLONG).
func checkName(op, name string) error {
	if len(name) > storeclient.MaxNameLen {
		return newError(op, name, syscall.ENAMETOOLONG, nil)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return newError(op, name, syscall.ENOENT, errors.New("not an entry name"))
	}
	return nil
}

// Lookup returns the entry called name in the directory dir.
//
// In the root, name must parse as a store path basename and equal the
// PathInfo's basename exactly; anything else is ENOENT. Below the root the
// Directory is read (EIO if it is missing or corrupt). A non-directory dir
// is ENOTDIR; "", ".", "..", and names with "/" or NUL are ENOENT (frontends
// resolve "." and ".." themselves); names over 255 bytes ENAMETOOLONG.
func (f *FS) Lookup(ctx context.Context, dir Node, name string) (Node, error) {
	t0 := f.opStart(OpLookup)
	n, err := f.lookup(ctx, dir, name)
	f.opEnd(OpLookup, t0, 0, err)
	return n, err
}

func (f *FS) lookup(ctx context.Context, dir Node, name string) (Node, error) {
	if err := checkName("lookup", name); err != nil {
		return Node{}, err
	}
	switch {
	case dir.place == placeRoot:
		return f.lookupRoot(ctx, name)
	case dir.place == placeInvalid:
		return Node{}, newError("lookup", name, syscall.EINVAL, errors.New("invalid node"))
	case dir.node.Kind() != storeclient.KindDirectory:
		return Node{}, newError("lookup", name, syscall.ENOTDIR, nil)
	}
	d, err := f.directory(ctx, "lookup", dir.node)
	if err != nil {
		return Node{}, err
	}
	e, i, ok := d.Lookup(name)
	if !ok {
		return Node{}, newError("lookup", name, syscall.ENOENT, nil)
	}
	return childNode(dir.node, i, e.Node), nil
}

func (f *FS) lookupRoot(ctx context.Context, name string) (Node, error) {
	sp, err := storeclient.ParseStorePathBasename(name)
	if err != nil {
		return Node{}, newError("lookup", name, syscall.ENOENT, err)
	}
	pi, err := f.getPathInfo(ctx, sp.Digest)
	if errors.Is(err, storeclient.ErrNotFound) {
		return Node{}, newError("lookup", name, syscall.ENOENT, err)
	}
	if err != nil {
		f.metadataFailed("path info", name, err)
		return Node{}, backendError("lookup", name, err)
	}
	if pi.StorePath.Digest != sp.Digest || pi.StorePath.Name != sp.Name {
		return Node{}, newError("lookup", name, syscall.ENOENT,
			fmt.Errorf("the store path with this hash is %s", pi.StorePath.Basename()))
	}
	return topNode(sp.Digest, pi.Node), nil
}

// Readlink returns a symlink's target; EINVAL for other nodes.
func (f *FS) Readlink(n Node) (string, error) {
	t0 := f.opStart(OpReadlink)
	target, err := f.readlink(n)
	f.opEnd(OpReadlink, t0, 0, err)
	return target, err
}

func (f *FS) readlink(n Node) (string, error) {
	if n.place == placeRoot || n.node.Kind() != storeclient.KindSymlink {
		return "", newError("readlink", "", syscall.EINVAL, errors.New("not a symlink"))
	}
	return string(n.node.Target()), nil
}

// Statfs describes the filesystem for statfs/FSSTAT.
type Statfs struct {
	BlockSize uint32 // bytes per block
	Blocks    uint64 // total blocks (0: the store's size is not known)
	Files     uint64 // total nodes (0: not known)
	NameMax   uint32 // longest name: 255
	ReadOnly  bool   // always true
}

// Statfs never fails: the filesystem is read-only, free space is zero and
// names are at most 255 bytes.
func (f *FS) Statfs() Statfs {
	return Statfs{BlockSize: 4096, NameMax: storeclient.MaxNameLen, ReadOnly: true}
}

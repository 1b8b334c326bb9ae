package fuse

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"math"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// Options configure the FUSE frontend. The zero value serves with the
// defaults, logging to slog.Default(). Passthrough and prefetching are on
// where vfs serves the store's blobs as trusted local files
// (vfs.FS.LocalBlobFiles, the embedded local store).
type Options struct {
	// NoPassthrough keeps reads in the daemon even where passthrough
	// works: they are spliced from the blob files instead (for
	// comparison and for debugging).
	NoPassthrough bool

	// NoListingCache opens directories without FOPEN_CACHE_DIR, so the
	// kernel does not keep a copy of each listing in its page cache and
	// asks the daemon again at the next listing. For a virtio-fs guest,
	// where that copy costs the guest's CPU and memory and the round trip
	// is cheap; QEMU's virtiofsd does not cache listings either in its
	// default cache mode.
	NoListingCache bool

	// Logger receives the frontend's log lines. Default slog.Default().
	Logger *slog.Logger
}

// forever is the entry and attribute timeout: content never changes while
// the daemon runs. The kernel clamps it to what it can represent.
const forever = time.Duration(math.MaxInt64)

// fileBlockSize is the st_blksize of regular files: the preferred I/O
// size tools such as cat and cp read with.
const fileBlockSize = 128 << 10

// dirBlockSize is the st_blksize of directories and symlinks, as local
// file systems report it. glibc's opendir sizes its getdents buffer by
// st_blksize: at 128 KiB every opendir in a walk mmaps a fresh buffer
// and faults its pages in, while one READDIRPLUS reply fills only 4 KiB
// of it (measured in a virtio-fs guest: ~70 more page faults and ~5 %
// more guest time per find over 70 directories).
const dirBlockSize = 4096

// filesystem is what every node of one served tree shares.
type filesystem struct {
	vfs *vfs.FS
	log *slog.Logger
	pt  *passthrough // nil: never passthrough (no trusted local blob files)
	pf  *prefetcher  // nil: no prefetching (no trusted local blob files)

	noListingCache bool // Options.NoListingCache
}

// NewRawFileSystem returns the FUSE filesystem serving fsys: the one
// fuse.RawFileSystem in which every FUSE operation is implemented. Mount
// serves it on a kernel mount; a virtio-fs transport serves it to a guest.
// Passthrough needs a kernel mount and is off in the value returned here.
func NewRawFileSystem(fsys *vfs.FS, opts Options) fuse.RawFileSystem {
	raw, _ := newFileSystem(fsys, opts)
	return raw
}

// newFileSystem builds the raw filesystem and the shared state behind it.
func newFileSystem(fsys *vfs.FS, opts Options) (fuse.RawFileSystem, *filesystem) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// A view the caller labelled (virtio-fs serves this filesystem too)
	// keeps its label, so its operations are counted as its own.
	view := fsys
	if fsys.Protocol() == "" {
		view = fsys.View("fuse")
	}
	s := &filesystem{vfs: view, log: log, noListingCache: opts.NoListingCache}
	if s.vfs.LocalBlobFiles() {
		s.pt = &passthrough{log: log}
		if opts.NoPassthrough {
			s.pt.off.Store(true)
		}
		s.pf = newPrefetcher(s.vfs)
	}
	root := &dirNode{node: node{fs: s, n: s.vfs.Root()}}
	entry, attr := forever, forever
	raw := fs.NewNodeFS(root, &fs.Options{
		EntryTimeout:   &entry,
		AttrTimeout:    &attr,
		RootStableAttr: &fs.StableAttr{Ino: vfs.RootIno},
		// Permission bits come from vfs as they are; a 0 never means
		// "fill in a default".
		NullPermissions: true,
	})
	return raw, s
}

// stableAttr returns the go-fuse identity of n, reached at the directory
// path whose key is pathKey (see "Identity" in the package documentation).
func stableAttr(n vfs.Node, pathKey uint64) fs.StableAttr {
	sa := fs.StableAttr{Ino: n.Ino()}
	sn := n.StoreNode()
	switch n.Kind() {
	case storeclient.KindDirectory:
		sa.Mode, sa.Gen = syscall.S_IFDIR, pathKey
	case storeclient.KindFile:
		d := sn.Digest()
		sa.Mode = syscall.S_IFREG
		sa.Gen = binary.LittleEndian.Uint64(d[8:16]) ^ sn.Size()
		if sn.Executable() {
			sa.Gen = ^sa.Gen
		}
	case storeclient.KindSymlink:
		h := fnv.New64a()
		h.Write([]byte(sn.Target()))
		sa.Mode, sa.Gen = syscall.S_IFLNK, h.Sum64()
	}
	return sa
}

// childKey returns the path key of the entry name below the directory with
// key parent: FNV-1a over both, distinct for distinct paths in practice.
func childKey(parent uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

// newInode returns the go-fuse node for n, an entry called name of the
// directory parent, and fills out with its attributes. go-fuse replaces it
// with an existing node of the same identity, if there is one.
func (s *filesystem) newInode(ctx context.Context, parent *dirNode, name string, n vfs.Node, out *fuse.EntryOut) *fs.Inode {
	s.fillAttr(n, &out.Attr)
	key := childKey(parent.key, name)
	var ops fs.InodeEmbedder
	switch n.Kind() {
	case storeclient.KindDirectory:
		ops = &dirNode{node: node{fs: s, n: n}, key: key}
	case storeclient.KindSymlink:
		ops = &symlinkNode{node: node{fs: s, n: n}}
	default:
		ops = &fileNode{node: node{fs: s, n: n}, parent: parent}
	}
	return parent.NewInode(ctx, ops, stableAttr(n, key))
}

// fillAttr copies vfs's attributes of n into a.
func (s *filesystem) fillAttr(n vfs.Node, a *fuse.Attr) {
	va := s.vfs.Attr(n)
	t := uint64(va.Mtime.Unix())
	*a = fuse.Attr{
		Ino:     va.Ino,
		Size:    va.Size,
		Blocks:  va.Blocks,
		Atime:   t,
		Mtime:   t,
		Ctime:   t,
		Mode:    va.UnixMode(),
		Nlink:   va.Nlink,
		Owner:   fuse.Owner{Uid: va.UID, Gid: va.GID},
		Blksize: dirBlockSize,
	}
	if n.Kind() == storeclient.KindFile {
		a.Blksize = fileBlockSize
	}
}

package fuse

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/vfs"
)

// dirNode is the root or a directory.
type dirNode struct {
	node
	// key identifies the directory's path (0 for the root); it is the
	// Gen of its StableAttr and the seed of its children's keys.
	key uint64
	// prefetched is set once the directory's small files were queued for
	// prefetching.
	prefetched atomic.Bool
}

var (
	_ fs.NodeLookuper       = (*dirNode)(nil)
	_ fs.NodeOpendirHandler = (*dirNode)(nil)
	_ fs.NodeCreater        = (*dirNode)(nil)
	_ fs.NodeMkdirer        = (*dirNode)(nil)
	_ fs.NodeMknoder        = (*dirNode)(nil)
	_ fs.NodeSymlinker      = (*dirNode)(nil)
	_ fs.NodeLinker         = (*dirNode)(nil)
	_ fs.NodeUnlinker       = (*dirNode)(nil)
	_ fs.NodeRmdirer        = (*dirNode)(nil)
	_ fs.NodeRenamer        = (*dirNode)(nil)
)

// Lookup finds the entry name: vfs decides (exact store path names in the
// root, ENOENT, EIO for a missing Directory, ...).
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n, err := d.fs.vfs.Lookup(ctx, d.n, name)
	if err != nil {
		return nil, errno(d.fs.log, "lookup", err)
	}
	return d.fs.newInode(ctx, d, name, n, out), 0
}

// batch is how many entries one vfs.ReadDir call returns: about what one
// READDIRPLUS reply of 4 KiB holds.
const batch = 64

// OpendirHandle opens a directory for listing. Directories below the root
// never change, so the kernel may cache their listing (unless
// Options.NoListingCache); the root can grow.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	var fl uint32
	if !d.n.IsRoot() && !d.fs.noListingCache {
		fl = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{dir: d}, fl, 0
}

// Create is refused.
func (d *dirNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, refuse("create", name)
}

// Mkdir is refused.
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, refuse("mkdir", name)
}

// Mknod is refused.
func (d *dirNode) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, refuse("mknod", name)
}

// Symlink is refused.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, refuse("symlink", name)
}

// Link is refused.
func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, refuse("link", name)
}

// Unlink is refused.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return refuse("unlink", name)
}

// Rmdir is refused.
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return refuse("rmdir", name)
}

// Rename is refused.
func (d *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return refuse("rename", name)
}

// Directory offsets of "." and "..": values vfs never uses as cookies
// (cookies below the root are small; root cookies never end in a zero
// nibble).
const (
	offDot    = ^uint64(0) - 0x1f
	offDotDot = ^uint64(0) - 0x0f
)

// dirHandle is an open directory: a position in the listing of "." and
// "..", then vfs.ReadDir's entries, resumed by cookie. go-fuse calls it
// under a per-handle lock.
type dirHandle struct {
	dir    *dirNode
	dots   int    // how many of "." and ".." were returned
	cookie uint64 // vfs cookie of the last entry returned (0: none)
	buf    []vfs.DirEntry
	eof    bool
	last   vfs.DirEntry // the last entry returned, for readdirplus
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
)

// fill reads the next batch from vfs if none is buffered.
func (h *dirHandle) fill(ctx context.Context) syscall.Errno {
	if len(h.buf) > 0 || h.eof {
		return 0
	}
	es, err := h.dir.fs.vfs.ReadDir(ctx, h.dir.n, h.cookie, batch)
	if err != nil {
		return errno(h.dir.fs.log, "readdir", err)
	}
	h.buf, h.eof = es, len(es) == 0
	return 0
}

// Readdirent returns the next entry, nil at the end. An unreadable
// directory (EPERM for the root with list_root off, EIO for a missing
// Directory) fails before "." is returned.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if e := h.fill(ctx); e != 0 {
		return nil, e
	}
	switch h.dots {
	case 0:
		h.dots = 1
		return &fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: h.dir.n.Ino(), Off: offDot}, 0
	case 1:
		h.dots = 2
		ino := uint64(vfs.RootIno)
		if _, p := h.dir.Parent(); p != nil {
			ino = p.StableAttr().Ino
		}
		return &fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino, Off: offDotDot}, 0
	}
	if h.eof {
		return nil, 0
	}
	e := h.buf[0]
	h.buf = h.buf[1:]
	h.cookie, h.last = e.Cookie, e
	return &fuse.DirEntry{
		Name: e.Name,
		Ino:  e.Node.Ino(),
		Mode: h.dir.fs.vfs.Attr(e.Node).UnixMode() &^ 0o7777,
		Off:  e.Cookie,
	}, 0
}

// Seekdir moves to the position after the entry whose offset is off.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.buf, h.eof, h.last = nil, false, vfs.DirEntry{}
	switch off {
	case 0:
		h.dots, h.cookie = 0, 0
	case offDot:
		h.dots, h.cookie = 1, 0
	case offDotDot:
		h.dots, h.cookie = 2, 0
	default:
		h.dots, h.cookie = 2, off
	}
	return 0
}

// Lookup gives readdirplus the node of the entry just listed, without a
// second walk through the Directory.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if h.last.Name == name && h.last.Node.IsValid() {
		return h.dir.fs.newInode(ctx, h.dir, name, h.last.Node, out), 0
	}
	return h.dir.Lookup(ctx, name, out)
}

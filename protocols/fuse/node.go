package fuse

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/vfs"
)

// node is what every node type embeds: the vfs node it shows and the
// operations every kind supports (attributes, extended attributes,
// statfs), plus the refusal of attribute and xattr writes.
type node struct {
	fs.Inode
	fs *filesystem
	n  vfs.Node
}

var (
	_ fs.NodeGetattrer     = (*node)(nil)
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
	_ fs.NodeStatfser      = (*node)(nil)
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
)

// Getattr answers stat from vfs; it needs no store call.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.fillAttr(n.n, &out.Attr)
	return 0
}

// Getxattr answers getxattr(2) from vfs: the size with an empty dest,
// ERANGE if dest is too small, ENODATA for names the node does not have.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	sz, err := n.fs.vfs.Getxattr(n.n, attr, dest)
	return uint32(sz), errno(n.fs.log, "getxattr", err)
}

// Listxattr answers listxattr(2) from vfs.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	sz, err := n.fs.vfs.Listxattr(n.n, dest)
	return uint32(sz), errno(n.fs.log, "listxattr", err)
}

// Statfs describes the filesystem; it never fails.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st := n.fs.vfs.Statfs()
	*out = fuse.StatfsOut{
		Blocks:  st.Blocks,
		Files:   st.Files,
		Bsize:   st.BlockSize,
		Frsize:  st.BlockSize,
		NameLen: st.NameMax,
	}
	return 0
}

// Setattr (chmod, chown, truncate, utimes) is refused.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return refuse("setattr", "")
}

// Setxattr is refused.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return refuse("setxattr", attr)
}

// Removexattr is refused.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return refuse("removexattr", attr)
}

// symlinkNode is a symbolic link.
type symlinkNode struct {
	node
}

var _ fs.NodeReadlinker = (*symlinkNode)(nil)

// Readlink returns the target.
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.fs.vfs.Readlink(n.n)
	if err != nil {
		return nil, errno(n.fs.log, "readlink", err)
	}
	return []byte(t), 0
}

package fuse

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/vfs"
)

// fileNode is a regular file.
type fileNode struct {
	node
	// parent is the directory the node was first found in: opening the
	// file prefetches its siblings there (see prefetcher).
	parent *dirNode
}

var _ fs.NodeOpener = (*fileNode)(nil)

// Open opens the file for reading; opening for writing is refused. vfs
// decides whether the content may be served (a missing blob is EIO; a
// blob of an untrusted store is verified first). The content never
// changes, so the kernel keeps its cache across opens; and a read-only
// file has nothing to flush, so FOPEN_NOFLUSH spares every close(2) a
// FLUSH round trip to the daemon.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, refuse("open", "")
	}
	f, err := n.fs.vfs.Open(ctx, n.n)
	if err != nil {
		return nil, 0, errno(n.fs.log, "open", err)
	}
	if n.fs.pf != nil && n.parent != nil && !n.parent.n.IsRoot() && !n.parent.prefetched.Swap(true) {
		n.fs.pf.directory(ctx, n.parent)
	}
	h := &fileHandle{f: f, fs: n.fs}
	if n.fs.pt != nil && f.Size() > 0 {
		h.backing = n.fs.pt.backing(f)
	}
	return h, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// fileHandle is an open regular file.
type fileHandle struct {
	f  *vfs.File
	fs *filesystem
	// backing is the blob's own file when the store keeps blobs as
	// files, for passthrough; nil for a packed blob (see
	// passthrough.backing). It belongs to f.
	backing *os.File
}

var (
	_ fs.FileReader          = (*fileHandle)(nil)
	_ fs.FileReleaser        = (*fileHandle)(nil)
	_ fs.FilePassthroughFder = (*fileHandle)(nil)
)

// Read reads at off. When vfs answers with a range of a file that holds
// the blob from its start, the bytes are spliced from it into the FUSE
// device without a copy through the daemon; a packed blob's range is read
// into dest instead (see passthrough.backing for why).
func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	res, err := h.f.Read(dest, off)
	if err != nil {
		return nil, errno(h.fs.log, "read", err)
	}
	if res.File != nil && res.Off == off {
		return fuse.ReadResultFd(res.File.Fd(), res.Off, res.Len), 0
	}
	b, err := res.Bytes(dest)
	if err != nil {
		return nil, errno(h.fs.log, "read", err)
	}
	return fuse.ReadResultData(b), 0
}

// PassthroughFd hands the blob's file to the kernel, which then reads it
// itself: reads of this file no longer reach the daemon.
func (h *fileHandle) PassthroughFd() (int, bool) {
	if h.backing == nil || !h.fs.pt.usable(h.backing) {
		return 0, false
	}
	return int(h.backing.Fd()), true
}

// Release closes the file.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	if err := h.f.Close(); err != nil {
		h.fs.log.Debug("fuse: close", "err", err)
	}
	return 0
}

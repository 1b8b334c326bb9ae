package nfs

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	gonfs "github.com/willscott/go-nfs"
	gonfsfile "github.com/willscott/go-nfs/file"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/billyfs"
)

// This file connects go-nfs to the record layer: go-nfs's Server accepts
// in-memory connections (net.Pipe) from a pipeListener, one per client
// connection, and the record layer forwards to it the calls the route table
// gives it. go-nfs names files by path, so its Handler maps our content
// handles to a one-component path (tokenPrefix + hex handle) that handleFS
// resolves with FS.ResolveHandle — no handle table.

// pipeListener is the net.Listener go-nfs's Server.Serve accepts from.
type pipeListener struct {
	conns     chan net.Conn
	closeOnce sync.Once
	done      chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next in-memory connection.
func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail.
func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Addr names the in-memory listener.
func (l *pipeListener) Addr() net.Addr { return pipeAddr("go-nfs") }

// dial hands go-nfs a new connection whose peer is the returned end. It
// fails once the listener is closed.
func (l *pipeListener) dial(remote net.Addr) (net.Conn, <-chan struct{}, error) {
	ours, theirs := net.Pipe()
	pc := &pipeConn{Conn: theirs, remote: remote, closed: make(chan struct{})}
	select {
	case l.conns <- pc:
		return ours, pc.closed, nil
	case <-l.done:
		ours.Close()
		theirs.Close()
		return nil, nil, net.ErrClosed
	}
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// pipeConn is go-nfs's end of a pipe. It reports the real client address
// (go-nfs passes the conn to Handler.Mount) and signals when go-nfs closes
// it, which go-nfs does when its connection goroutine ends.
type pipeConn struct {
	net.Conn
	remote    net.Addr
	closeOnce sync.Once
	closed    chan struct{}
}

func (p *pipeConn) RemoteAddr() net.Addr { return p.remote }

func (p *pipeConn) Close() error {
	err := p.Conn.Close()
	p.closeOnce.Do(func() { close(p.closed) })
	return err
}

// gonfsHandler is go-nfs's Handler over vfs content handles.
type gonfsHandler struct{ s *Server }

var _ gonfs.Handler = (*gonfsHandler)(nil)

// Mount answers MNT: any path that walks to a directory can be mounted
// ("/" is the store root; "/<hash>-<name>" a store path).
func (h *gonfsHandler) Mount(ctx context.Context, nc net.Conn, req gonfs.MountRequest) (gonfs.MountStatus, billy.Filesystem, []gonfs.AuthFlavor) {
	dir := string(req.Dirpath)
	log := h.s.log.With("client", nc.RemoteAddr().String(), "path", dir)
	n, err := h.s.fs.Walk(ctx, dir, true)
	if err == nil && !n.IsDir() {
		err = &vfs.Error{Op: "mount", Name: dir, Errno: syscall.ENOTDIR}
	}
	if err != nil {
		log.Info("nfs: mount refused", "err", err)
		return gonfs.MountStatus(mountStatusOf(err)), nil, nil
	}
	log.Info("nfs: mount")
	return gonfs.MountStatusOk, &handleFS{FS: billyfs.New(h.s.ctx, h.s.fs), s: h.s, root: n},
		[]gonfs.AuthFlavor{gonfs.AuthFlavorUnix, gonfs.AuthFlavorNull}
}

// Change returns nil: the filesystem is read-only.
func (h *gonfsHandler) Change(billy.Filesystem) billy.Change { return nil }

// FSStat fills in the store's statistics.
func (h *gonfsHandler) FSStat(_ context.Context, _ billy.Filesystem, st *gonfs.FSStat) error {
	sf := h.s.fs.Statfs()
	*st = gonfs.FSStat{TotalSize: sf.Blocks * uint64(sf.BlockSize), TotalFiles: sf.Files}
	return nil
}

// ToHandle returns the vfs handle of the node at path below fsys's root
// (nil if there is none: go-nfs has no error path here).
func (h *gonfsHandler) ToHandle(fsys billy.Filesystem, path []string) []byte {
	hf, ok := fsys.(*handleFS)
	if !ok {
		return nil
	}
	n, err := hf.walk(strings.Join(path, "/"), false)
	if err != nil {
		return nil
	}
	return n.Handle()
}

// FromHandle resolves a handle to the one-component path of its token.
func (h *gonfsHandler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	n, err := h.s.resolve(h.s.ctx, fh)
	if err != nil {
		return nil, nil, err
	}
	return &handleFS{FS: billyfs.New(h.s.ctx, h.s.fs), s: h.s, root: n}, []string{tokenPrefix + hex.EncodeToString(fh)}, nil
}

// InvalidateHandle does nothing: there is no handle table.
func (h *gonfsHandler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit is what go-nfs's own READDIR divides by two to bound a
// listing's entries; handles themselves are unlimited (no table).
func (h *gonfsHandler) HandleLimit() int { return 1 << 30 }

// tokenPrefix starts a path component that is a handle. Names never
// contain NUL, so no entry can be mistaken for one.
const tokenPrefix = "\x00"

// handleFS is the read-only billy.Filesystem go-nfs sees: paths are
// relative to root, or start with a handle token. Writes are refused by
// the embedded billyfs facade (EROFS); reads resolve here.
type handleFS struct {
	*billyfs.FS
	s    *Server
	root vfs.Node
}

// Join joins path elements without cleaning them: a handle token must stay
// the first component.
func (h *handleFS) Join(elem ...string) string { return strings.Join(elem, "/") }

// maxSymlinks bounds symlinks followed in one walk, as Linux.
const maxSymlinks = 40

// walk resolves p as described on handleFS. Symlinks are followed in
// directory components, and in the last one if follow is set.
func (h *handleFS) walk(p string, follow bool) (vfs.Node, error) {
	ctx := h.s.ctx
	comps := strings.Split(p, "/")
	stack := []vfs.Node{h.root}
	if len(comps) > 0 && strings.HasPrefix(comps[0], tokenPrefix) {
		fh, err := hex.DecodeString(comps[0][len(tokenPrefix):])
		if err != nil {
			return vfs.Node{}, &vfs.Error{Op: "walk", Name: p, Errno: syscall.ESTALE, Err: err}
		}
		n, err := h.s.resolve(ctx, fh)
		if err != nil {
			return vfs.Node{}, err
		}
		stack, comps = []vfs.Node{n}, comps[1:]
	}
	links := 0
	for i := 0; i < len(comps); i++ {
		switch comps[i] {
		case "", ".":
			continue
		case "..":
			if len(stack) == 1 {
				return vfs.Node{}, &vfs.Error{Op: "walk", Name: p, Errno: syscall.ENOENT, Err: errors.New("no parent above a handle")}
			}
			stack = stack[:len(stack)-1]
			continue
		}
		n, err := h.s.fs.Lookup(ctx, stack[len(stack)-1], comps[i])
		if err != nil {
			return vfs.Node{}, err
		}
		last := i == len(comps)-1
		if n.Kind() != storeclient.KindSymlink || (last && !follow) {
			stack = append(stack, n)
			continue
		}
		if links++; links > maxSymlinks {
			return vfs.Node{}, &vfs.Error{Op: "walk", Name: p, Errno: syscall.ELOOP}
		}
		target, _ := h.s.fs.Readlink(n)
		rest := strings.Join(comps[i+1:], "/")
		if strings.HasPrefix(target, "/") {
			return h.s.fs.Walk(ctx, target+"/"+rest, follow)
		}
		comps, i = strings.Split(target+"/"+rest, "/"), -1
	}
	return stack[len(stack)-1], nil
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: vfs.Errno(err)}
}

// Open opens a file for reading.
func (h *handleFS) Open(name string) (billy.File, error) { return h.OpenFile(name, os.O_RDONLY, 0) }

// OpenFile opens a file for reading; writing flags are EROFS.
func (h *handleFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return h.FS.OpenFile(name, flag, perm)
	}
	n, err := h.walk(name, true)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	f, err := h.s.fs.Open(h.s.ctx, n)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return &billyFile{name: name, f: f}, nil
}

// Stat describes a file, following symlinks.
func (h *handleFS) Stat(name string) (os.FileInfo, error) { return h.stat("stat", name, true) }

// Lstat describes a file without following a final symlink.
func (h *handleFS) Lstat(name string) (os.FileInfo, error) { return h.stat("lstat", name, false) }

func (h *handleFS) stat(op, name string, follow bool) (os.FileInfo, error) {
	n, err := h.walk(name, follow)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	base := name[strings.LastIndexByte(name, '/')+1:]
	return &fileInfo{name: base, attr: h.s.fs.Attr(n)}, nil
}

// ReadDir lists a directory (go-nfs's own READDIR reads everything).
func (h *handleFS) ReadDir(name string) ([]os.FileInfo, error) {
	n, err := h.walk(name, true)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	var out []os.FileInfo
	var cookie uint64
	for {
		es, err := h.s.fs.ReadDir(h.s.ctx, n, cookie, 4096)
		if err != nil {
			return nil, pathErr("readdir", name, err)
		}
		if len(es) == 0 {
			return out, nil
		}
		for _, e := range es {
			out = append(out, &fileInfo{name: e.Name, attr: h.s.fs.Attr(e.Node)})
		}
		cookie = es[len(es)-1].Cookie
	}
}

// Readlink returns a symlink's target.
func (h *handleFS) Readlink(name string) (string, error) {
	n, err := h.walk(name, false)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	t, err := h.s.fs.Readlink(n)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	return t, nil
}

// fileInfo is what handleFS's Stat returns; Sys gives go-nfs the inode
// number, nlink and owner.
type fileInfo struct {
	name string
	attr vfs.Attr
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return int64(i.attr.Size) }
func (i *fileInfo) Mode() fs.FileMode  { return i.attr.Mode }
func (i *fileInfo) ModTime() time.Time { return i.attr.Mtime }
func (i *fileInfo) IsDir() bool        { return i.attr.Mode.IsDir() }
func (i *fileInfo) Sys() any {
	return &gonfsfile.FileInfo{Nlink: i.attr.Nlink, UID: i.attr.UID, GID: i.attr.GID, Fileid: i.attr.Ino}
}

// billyFile is an open file for go-nfs's READ.
type billyFile struct {
	name string
	f    *vfs.File
	off  int64
}

func (b *billyFile) Name() string { return b.name }
func (b *billyFile) Read(p []byte) (int, error) {
	n, err := b.ReadAt(p, b.off)
	b.off += int64(n)
	return n, err
}
func (b *billyFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, pathErr("read", b.name, err)
	}
	return n, err
}
func (b *billyFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += b.off
	case io.SeekEnd:
		off += b.f.Size()
	default:
		off = -1
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "seek", Path: b.name, Err: syscall.EINVAL}
	}
	b.off = off
	return off, nil
}
func (b *billyFile) Write([]byte) (int, error) { return 0, vfs.ReadOnly("write", b.name) }
func (b *billyFile) Truncate(int64) error      { return vfs.ReadOnly("truncate", b.name) }
func (b *billyFile) Lock() error               { return nil }
func (b *billyFile) Unlock() error             { return nil }
func (b *billyFile) Close() error              { return b.f.Close() }

// Package billyfs is a read-only billy.Filesystem over vfs, for servers
// built on go-billy (go-nfs). It only translates: every rule lives in vfs.
//
// Paths are slash-separated and relative to the store root. Errors are
// *fs.PathError whose Err is the syscall.Errno vfs chose (so os.IsNotExist,
// os.IsPermission and errors.Is work, and vfs.Errno maps them); every write
// fails with EROFS (vfs.Errno) that also matches billy.ErrReadOnly.
// Capabilities reports read and seek only, which go-nfs answers with
// NFS3ERR_ROFS for writes.
package billyfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"

	"github.com/storefs/storefs/vfs"
)

// FS is a read-only billy.Filesystem over a vfs.FS.
type FS struct {
	ctx context.Context
	fs  *vfs.FS
}

var (
	_ billy.Filesystem = (*FS)(nil)
	_ billy.Change     = (*FS)(nil)
	_ billy.Capable    = (*FS)(nil)
)

// New returns the facade. ctx bounds every store call it makes (billy's
// methods take none); cancel it when the server stops.
func New(ctx context.Context, fsys *vfs.FS) *FS { return &FS{ctx: ctx, fs: fsys} }

// VFS returns the vfs.FS behind the facade.
func (f *FS) VFS() *vfs.FS { return f.fs }

// pathError turns a vfs error into a *fs.PathError carrying its errno.
func pathError(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: vfs.Errno(err)}
}

// readOnlyError is the refusal of a write: EROFS for vfs.Errno and
// os-style checks, and billy.ErrReadOnly for errors.Is.
type readOnlyError struct{ op, name string }

func (e *readOnlyError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.op, e.name, syscall.EROFS)
}

// Unwrap returns the errno and billy's sentinel.
func (e *readOnlyError) Unwrap() []error {
	return []error{vfs.ReadOnly(e.op, e.name), billy.ErrReadOnly}
}

func readOnly(op, name string) error { return &readOnlyError{op: op, name: name} }

// Capabilities reports a read-only, seekable filesystem.
func (f *FS) Capabilities() billy.Capability {
	return billy.ReadCapability | billy.SeekCapability
}

// Create is refused: EROFS.
func (f *FS) Create(filename string) (billy.File, error) { return nil, readOnly("create", filename) }

// Open opens a file for reading.
func (f *FS) Open(filename string) (billy.File, error) {
	return f.OpenFile(filename, os.O_RDONLY, 0)
}

// OpenFile opens a file for reading; any flag that writes, creates or
// truncates is EROFS.
func (f *FS) OpenFile(filename string, flag int, _ os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, readOnly("open", filename)
	}
	n, err := f.fs.Walk(f.ctx, filename, true)
	if err != nil {
		return nil, pathError("open", filename, err)
	}
	vf, err := f.fs.Open(f.ctx, n)
	if err != nil {
		return nil, pathError("open", filename, err)
	}
	return &file{name: filename, f: vf}, nil
}

// Stat describes a file, following symlinks.
func (f *FS) Stat(filename string) (os.FileInfo, error) { return f.stat("stat", filename, true) }

// Lstat describes a file without following a final symlink.
func (f *FS) Lstat(filename string) (os.FileInfo, error) { return f.stat("lstat", filename, false) }

func (f *FS) stat(op, filename string, follow bool) (os.FileInfo, error) {
	n, err := f.fs.Walk(f.ctx, filename, follow)
	if err != nil {
		return nil, pathError(op, filename, err)
	}
	name := path.Base(path.Join("/", filename))
	return f.info(name, n), nil
}

// Rename is refused: EROFS.
func (f *FS) Rename(oldpath, _ string) error { return readOnly("rename", oldpath) }

// Remove is refused: EROFS.
func (f *FS) Remove(filename string) error { return readOnly("remove", filename) }

// Join joins path elements with "/".
func (f *FS) Join(elem ...string) string { return path.Join(elem...) }

// TempFile is refused: EROFS.
func (f *FS) TempFile(dir, _ string) (billy.File, error) { return nil, readOnly("tempfile", dir) }

// ReadDir lists a directory in byte order of the names, without "." and
// "..". The root lists only with list_root on (else EPERM).
func (f *FS) ReadDir(dirname string) ([]os.FileInfo, error) {
	n, err := f.fs.Walk(f.ctx, dirname, true)
	if err != nil {
		return nil, pathError("readdir", dirname, err)
	}
	var out []os.FileInfo
	var cookie uint64
	for {
		es, err := f.fs.ReadDir(f.ctx, n, cookie, 1024)
		if err != nil {
			return nil, pathError("readdir", dirname, err)
		}
		if len(es) == 0 {
			return out, nil
		}
		for _, e := range es {
			out = append(out, f.info(e.Name, e.Node))
		}
		cookie = es[len(es)-1].Cookie
	}
}

// MkdirAll is refused: EROFS.
func (f *FS) MkdirAll(filename string, _ os.FileMode) error { return readOnly("mkdir", filename) }

// Symlink is refused: EROFS.
func (f *FS) Symlink(_, link string) error { return readOnly("symlink", link) }

// Readlink returns a symlink's target; EINVAL for other files.
func (f *FS) Readlink(link string) (string, error) {
	n, err := f.fs.Walk(f.ctx, link, false)
	if err != nil {
		return "", pathError("readlink", link, err)
	}
	t, err := f.fs.Readlink(n)
	return t, pathError("readlink", link, err)
}

// Chroot is not supported: the facade always serves the whole store.
func (f *FS) Chroot(p string) (billy.Filesystem, error) {
	return nil, &fs.PathError{Op: "chroot", Path: p, Err: billy.ErrNotSupported}
}

// Root returns "/".
func (f *FS) Root() string { return "/" }

// Chmod is refused: EROFS.
func (f *FS) Chmod(name string, _ os.FileMode) error { return readOnly("chmod", name) }

// Lchown is refused: EROFS.
func (f *FS) Lchown(name string, _, _ int) error { return readOnly("lchown", name) }

// Chown is refused: EROFS.
func (f *FS) Chown(name string, _, _ int) error { return readOnly("chown", name) }

// Chtimes is refused: EROFS.
func (f *FS) Chtimes(name string, _, _ time.Time) error { return readOnly("chtimes", name) }

// FileInfo is the os.FileInfo billyfs returns. Sys returns a
// *syscall.Stat_t on Unix (go-nfs reads the inode number, nlink, uid and
// gid from it); Attr and Node give the vfs view.
type FileInfo struct {
	name string
	node vfs.Node
	attr vfs.Attr
}

func (f *FS) info(name string, n vfs.Node) *FileInfo {
	return &FileInfo{name: name, node: n, attr: f.fs.Attr(n)}
}

// Name returns the base name.
func (i *FileInfo) Name() string { return i.name }

// Size returns the size of docs/filesystem.md.
func (i *FileInfo) Size() int64 { return int64(i.attr.Size) }

// Mode returns the type bits and permissions.
func (i *FileInfo) Mode() fs.FileMode { return i.attr.Mode }

// ModTime returns 1 s after the epoch.
func (i *FileInfo) ModTime() time.Time { return i.attr.Mtime }

// IsDir reports whether the node is a directory.
func (i *FileInfo) IsDir() bool { return i.attr.Mode.IsDir() }

// Sys returns a *syscall.Stat_t on Unix, else the vfs.Attr.
func (i *FileInfo) Sys() any { return sys(i.attr) }

// Attr returns the vfs attributes.
func (i *FileInfo) Attr() vfs.Attr { return i.attr }

// Node returns the vfs node (for its Handle).
func (i *FileInfo) Node() vfs.Node { return i.node }

// file is an open billy.File.
type file struct {
	name string
	f    *vfs.File
	off  int64
}

func (fl *file) Name() string { return fl.name }

func (fl *file) Read(p []byte) (int, error) {
	n, err := fl.ReadAt(p, fl.off)
	fl.off += int64(n)
	return n, err
}

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	n, err := fl.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, pathError("read", fl.name, err)
	}
	return n, err
}

func (fl *file) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = fl.off + offset
	case io.SeekEnd:
		abs = fl.f.Size() + offset
	default:
		return 0, &fs.PathError{Op: "seek", Path: fl.name, Err: syscall.EINVAL}
	}
	if abs < 0 {
		return 0, &fs.PathError{Op: "seek", Path: fl.name, Err: syscall.EINVAL}
	}
	fl.off = abs
	return abs, nil
}

func (fl *file) Write([]byte) (int, error) { return 0, readOnly("write", fl.name) }
func (fl *file) Truncate(int64) error      { return readOnly("truncate", fl.name) }
func (fl *file) Lock() error               { return nil }
func (fl *file) Unlock() error             { return nil }
func (fl *file) Close() error              { return fl.f.Close() }

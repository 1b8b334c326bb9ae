package vfstest

import (
	"context"
	"errors"
	"io"
	"io/fs"
	pathpkg "path"

	"github.com/storefs/storefs/vfs"
)

// Direct returns a Client that calls fsys directly, without a protocol: the
// suite run against vfs itself, and a reference for frontend clients. It
// implements HandleClient with vfs handles.
func Direct(ctx context.Context, fsys *vfs.FS) HandleClient { return &direct{ctx: ctx, fs: fsys} }

type direct struct {
	ctx context.Context
	fs  *vfs.FS
}

func (d *direct) stat(path string, follow bool) (Stat, error) {
	n, err := d.fs.Walk(d.ctx, path, follow)
	if err != nil {
		return Stat{}, err
	}
	return d.toStat(n), nil
}

func (d *direct) toStat(n vfs.Node) Stat {
	a := d.fs.Attr(n)
	return Stat{Mode: a.Mode, Size: int64(a.Size), Ino: a.Ino, Nlink: uint64(a.Nlink), UID: a.UID, GID: a.GID, Blocks: int64(a.Blocks), Mtime: a.Mtime}
}

func (d *direct) Stat(path string) (Stat, error)  { return d.stat(path, true) }
func (d *direct) Lstat(path string) (Stat, error) { return d.stat(path, false) }

func (d *direct) ReadDir(path string, batch int) ([]DirEntry, error) {
	n, err := d.fs.Walk(d.ctx, path, true)
	if err != nil {
		return nil, err
	}
	var out []DirEntry
	var cookie uint64
	for {
		es, err := d.fs.ReadDir(d.ctx, n, cookie, batch)
		if err != nil {
			return out, err
		}
		if len(es) == 0 {
			return out, nil
		}
		for _, e := range es {
			out = append(out, DirEntry{Name: e.Name, Type: d.fs.Attr(e.Node).Mode.Type()})
		}
		cookie = es[len(es)-1].Cookie
	}
}

func (d *direct) open(path string) (*vfs.File, error) {
	n, err := d.fs.Walk(d.ctx, path, true)
	if err != nil {
		return nil, err
	}
	return d.fs.Open(d.ctx, n)
}

func (d *direct) ReadFile(path string) ([]byte, error) {
	f, err := d.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, f.Size())
	n, err := f.ReadAt(b, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:n], err
}

func (d *direct) ReadAt(path string, p []byte, off int64) (int, error) {
	f, err := d.open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

func (d *direct) Readlink(path string) (string, error) {
	n, err := d.fs.Walk(d.ctx, path, false)
	if err != nil {
		return "", err
	}
	return d.fs.Readlink(n)
}

func (d *direct) Getxattr(path, name string) ([]byte, error) {
	n, err := d.fs.Walk(d.ctx, path, true)
	if err != nil {
		return nil, err
	}
	size, err := d.fs.Getxattr(n, name, nil)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if size == 0 {
		return b, nil
	}
	size, err = d.fs.Getxattr(n, name, b)
	return b[:size], err
}

// Writes walk to the parent (or node) first, as a kernel would, so that a
// missing parent is ENOENT and everything else the read-only refusal.
func (d *direct) refuse(op, path string) error {
	if _, err := d.fs.Walk(d.ctx, pathpkg.Dir(path), true); err != nil {
		return err
	}
	return vfs.ReadOnly(op, path)
}

func (d *direct) Create(path string) error             { return d.refuse("create", path) }
func (d *direct) Mkdir(path string) error              { return d.refuse("mkdir", path) }
func (d *direct) Rename(oldpath, newpath string) error { return d.refuse("rename", oldpath) }
func (d *direct) Remove(path string) error             { return d.refuse("unlink", path) }
func (d *direct) Chmod(path string, _ fs.FileMode) error {
	if _, err := d.fs.Walk(d.ctx, path, true); err != nil {
		return err
	}
	return vfs.ReadOnly("setattr", path)
}
func (d *direct) Truncate(path string, _ int64) error { return d.Chmod(path, 0) }
func (d *direct) WriteAt(path string, _ []byte, _ int64) error {
	f, err := d.open(path)
	if err != nil {
		return err
	}
	f.Close()
	return vfs.ReadOnly("write", path)
}

func (d *direct) Handle(path string) ([]byte, error) {
	n, err := d.fs.Walk(d.ctx, path, false)
	if err != nil {
		return nil, err
	}
	return n.Handle(), nil
}

func (d *direct) StatHandle(h []byte) (Stat, error) {
	n, err := d.fs.ResolveHandle(d.ctx, h)
	if err != nil {
		return Stat{}, err
	}
	return d.toStat(n), nil
}

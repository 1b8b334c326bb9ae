package billyfs_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5"
	"go.uber.org/goleak"

	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/billyfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance runs the suite through the billy facade, the way go-nfs
// calls it.
func TestConformance(t *testing.T) {
	vfstest.Run(t, vfstest.Frontend{
		Serve: func(t *testing.T, fsys *vfs.FS) vfstest.Client {
			return client{billyfs.New(t.Context(), fsys)}
		},
		Skip: map[string]string{"24-xattrs": "billy has no extended attributes"},
	})
}

func TestWritesMatchBillyReadOnly(t *testing.T) {
	bfs := billyfs.New(t.Context(), nil)
	err := bfs.Remove("x")
	if !errors.Is(err, billy.ErrReadOnly) || vfs.Errno(err) != syscall.EROFS || !errors.Is(err, vfs.ErrReadOnly) {
		t.Errorf("Remove: %v; want billy.ErrReadOnly and EROFS", err)
	}
	if billy.CapabilityCheck(bfs, billy.WriteCapability) {
		t.Error("facade claims write capability")
	}
}

// client drives a billy.Filesystem as go-nfs would.
type client struct{ fs *billyfs.FS }

func toStat(fi os.FileInfo) vfstest.Stat {
	st := fi.Sys().(*syscall.Stat_t)
	return vfstest.Stat{Mode: fi.Mode(), Size: fi.Size(), Ino: st.Ino, Nlink: uint64(st.Nlink), UID: st.Uid, GID: st.Gid, Blocks: st.Blocks, Mtime: fi.ModTime()}
}

func (c client) Stat(p string) (vfstest.Stat, error) {
	fi, err := c.fs.Stat(p)
	if err != nil {
		return vfstest.Stat{}, err
	}
	return toStat(fi), nil
}

func (c client) Lstat(p string) (vfstest.Stat, error) {
	fi, err := c.fs.Lstat(p)
	if err != nil {
		return vfstest.Stat{}, err
	}
	return toStat(fi), nil
}

func (c client) ReadDir(p string, _ int) ([]vfstest.DirEntry, error) {
	fis, err := c.fs.ReadDir(p)
	if err != nil {
		return nil, err
	}
	out := make([]vfstest.DirEntry, len(fis))
	for i, fi := range fis {
		out[i] = vfstest.DirEntry{Name: fi.Name(), Type: fi.Mode().Type()}
	}
	return out, nil
}

func (c client) ReadFile(p string) ([]byte, error) {
	f, err := c.fs.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func (c client) ReadAt(p string, b []byte, off int64) (int, error) {
	f, err := c.fs.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(b, off)
}

func (c client) Readlink(p string) (string, error) { return c.fs.Readlink(p) }

func (c client) Getxattr(string, string) ([]byte, error) { return nil, syscall.ENOTSUP }

func (c client) Create(p string) error {
	_, err := c.fs.Create(p)
	return err
}
func (c client) Mkdir(p string) error                      { return c.fs.MkdirAll(p, 0o755) }
func (c client) Rename(o, n string) error                  { return c.fs.Rename(o, n) }
func (c client) Remove(p string) error                     { return c.fs.Remove(p) }
func (c client) Chmod(p string, m fs.FileMode) error       { return c.fs.Chmod(p, m) }
func (c client) Truncate(p string, _ int64) error          { return openWrite(c.fs, p, os.O_RDWR|os.O_TRUNC) }
func (c client) WriteAt(p string, _ []byte, _ int64) error { return openWrite(c.fs, p, os.O_WRONLY) }

func openWrite(bfs *billyfs.FS, p string, flag int) error {
	f, err := bfs.OpenFile(p, flag, 0)
	if err == nil {
		f.Close()
	}
	return err
}

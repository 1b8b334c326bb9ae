package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/vfs"
)

// Names in the source tree that the checks refer to.
const (
	unicodeDir  = "share/ünï cödé"
	unicodeFile = unicodeDir + "/日本語.txt"
	bigFile     = "data/big.bin"
	bigSize     = 3<<20 + 12345 // a few MiB, not a multiple of any read size
)

// symlinks of the source tree: relative, up, absolute (outside the store,
// dangling in the guest), dangling, and one to a directory.
var symlinks = map[string]string{
	"bin/rel-link": "hello",
	"bin/up-link":  "../share/doc/README",
	"bin/abs-link": "/nix/store/00000000000000000000000000000000-missing/bin/x",
	"dangling":     "does-not-exist",
	"link-to-dir":  "lib/a",
}

// writeSourceTree writes the tree every kernel client is checked against:
// regular and executable files, empty files and directories, symlinks of
// every kind, unicode names, a nested tree, two identical directories
// (lib/a, lib/b) and files (share/doc/README{,.copy}) that share inodes, a
// plain and an executable copy of the same bytes (bin/hello-plain,
// bin/hello) that do not, and a file of a few MiB. The content is the same
// on every run.
func writeSourceTree(t *testing.T, root string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	random := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b)
	}
	lib := random(200_000)
	type file struct {
		data string
		exec bool
	}
	files := map[string]file{
		"bin/hello":                  {"#!/bin/sh\necho hello\n", true},
		"bin/hello-plain":            {"#!/bin/sh\necho hello\n", false},
		"empty-file":                 {"", false},
		"share/doc/README":           {"read me\n", false},
		"share/doc/README.copy":      {"read me\n", false},
		"share/doc/.hidden":          {"hidden\n", false},
		unicodeFile:                  {"ユニコード\n", false},
		"lib/a/libfoo.so":            {lib, true},
		"lib/a/empty":                {"", false},
		"lib/a/nested/deep/leaf.txt": {"leaf\n", false},
		"lib/b/libfoo.so":            {lib, true},
		"lib/b/empty":                {"", false},
		"lib/b/nested/deep/leaf.txt": {"leaf\n", false},
		bigFile:                      {random(bigSize), false},
	}
	for i := range 40 {
		files[fmt.Sprintf("many/f%02d", i)] = file{fmt.Sprintf("file %d\n", i), i%5 == 0}
	}
	for _, d := range []string{"empty-dir", "share/empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if f.exec {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(f.data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // the umask
			t.Fatal(err)
		}
	}
	for link, target := range symlinks {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
}

// fixture is the source tree imported into a store, and the filesystems
// the servers under test serve.
type fixture struct {
	src   string // the source tree on the host
	store *local.Store
	// base is the imported store path's basename, the name in the root.
	base string
	// fsys lists the root (list_root on), noList does not.
	fsys, noList *vfs.FS
}

// newFixture writes the source tree, imports it with importer.ImportPath
// and checks, on the host, that vfs shows it as filesystem.md says: the
// expected listings of the guest checks are rendered from vfs, so vfs must
// first be right about the source.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	src := filepath.Join(t.TempDir(), "tree")
	writeSourceTree(t, src)
	s, err := local.Open(ctx, t.TempDir(), local.Options{NoSync: true, Logger: quietLog()})
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	pi, err := importer.ImportPath(ctx, s, src, importer.Options{Logger: quietLog()})
	if err != nil {
		t.Fatalf("importing %s: %v", src, err)
	}
	fx := &fixture{src: src, store: s, base: pi.StorePath.Basename()}
	if fx.fsys, err = vfs.New(s, vfs.Options{ListRoot: true, Logger: quietLog()}); err != nil {
		t.Fatal(err)
	}
	if fx.noList, err = vfs.New(s, vfs.Options{Logger: quietLog()}); err != nil {
		t.Fatal(err)
	}
	if err := fx.checkVFS(ctx); err != nil {
		t.Fatalf("vfs does not show the imported tree as the spec says: %v", err)
	}
	return fx
}

// quietLog drops the info lines of the store, importer and vfs.
func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// relPaths returns the source tree's paths relative to its root ("." for
// the root), in byte order.
func (fx *fixture) relPaths() ([]string, error) {
	var paths []string
	err := filepath.WalkDir(fx.src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(fx.src, p)
		paths = append(paths, filepath.ToSlash(rel))
		return err
	})
	sort.Strings(paths)
	return paths, err
}

// storePath returns the vfs path of rel ("." is the imported root).
func (fx *fixture) storePath(rel string) string {
	if rel == "." || rel == "" {
		return fx.base
	}
	return fx.base + "/" + rel
}

// node resolves rel without following a final symlink.
func (fx *fixture) node(ctx context.Context, rel string) (vfs.Node, error) {
	n, err := fx.fsys.Walk(ctx, fx.storePath(rel), false)
	if err != nil {
		return vfs.Node{}, fmt.Errorf("vfs walk %s: %w", fx.storePath(rel), err)
	}
	return n, nil
}

// checkVFS compares every node of the imported tree in vfs with the
// source: type, permissions (0444, 0555 for executables and directories,
// symlinks 0444), sizes, symlink targets, nlink, owner, mtime, and the
// shared and distinct inode numbers of the spec.
func (fx *fixture) checkVFS(ctx context.Context) error {
	paths, err := fx.relPaths()
	if err != nil {
		return err
	}
	var errs []error
	for _, rel := range paths {
		fi, err := os.Lstat(filepath.Join(fx.src, rel))
		if err != nil {
			return err
		}
		n, err := fx.node(ctx, rel)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a := fx.fsys.Attr(n)
		want := vfs.Attr{Ino: a.Ino, Nlink: 1, Mtime: a.Mtime}
		switch {
		case fi.IsDir():
			want.Mode = fs.ModeDir | 0o555
			want.Nlink = 2
			want.Size = a.Size // the Directory size field; not the host's
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(fx.src, rel))
			if err != nil {
				return err
			}
			got, err := fx.fsys.Readlink(n)
			if err != nil || got != target {
				errs = append(errs, fmt.Errorf("%s: readlink %q (%v), want %q", rel, got, err, target))
			}
			want.Mode = fs.ModeSymlink | 0o444
			want.Size = uint64(len(target))
		default:
			want.Mode = 0o444
			if fi.Mode()&0o100 != 0 {
				want.Mode = 0o555
			}
			want.Size = uint64(fi.Size())
			want.Blocks = (want.Size + 511) / 512
		}
		if a.Mtime.Unix() != 1 {
			errs = append(errs, fmt.Errorf("%s: mtime %v, want 1970-01-01T00:00:01Z", rel, a.Mtime))
		}
		if a != want {
			errs = append(errs, fmt.Errorf("%s: vfs attributes %+v, want %+v", rel, a, want))
		}
	}
	ino := func(rel string) uint64 {
		n, err := fx.node(ctx, rel)
		if err != nil {
			errs = append(errs, err)
		}
		return n.Ino()
	}
	for _, same := range [][2]string{
		{"lib/a", "lib/b"},
		{"lib/a/nested", "lib/b/nested"},
		{"share/doc/README", "share/doc/README.copy"},
		{"lib/a/libfoo.so", "lib/b/libfoo.so"},
		{"empty-file", "lib/a/empty"},
		{"share/empty", "empty-dir"},
	} {
		if a, b := ino(same[0]), ino(same[1]); a != b {
			errs = append(errs, fmt.Errorf("equal content %s and %s: inodes %d and %d, want one", same[0], same[1], a, b))
		}
	}
	if a, b := ino("bin/hello"), ino("bin/hello-plain"); a == b {
		errs = append(errs, fmt.Errorf("the executable and plain copies bin/hello and bin/hello-plain share inode %d", a))
	}
	return errors.Join(errs...)
}

// inodePaths are the paths (relative to the imported root; "/" is the
// store root) whose inode numbers are compared on every client.
var inodePaths = []string{
	"/", ".", "bin", "bin/hello", "bin/hello-plain", "bin/rel-link", "bin/up-link", "bin/abs-link",
	"dangling", "link-to-dir", "empty-file", "empty-dir", "share/empty", "share/doc/README",
	"share/doc/README.copy", "lib/a", "lib/b", "lib/a/nested", "lib/b/nested/deep/leaf.txt",
	"lib/a/libfoo.so", "lib/b/libfoo.so", "lib/a/empty", unicodeDir, unicodeFile, bigFile, "many/f00",
}

// vfsInodes returns the vfs inode number of every path of inodePaths.
func (fx *fixture) vfsInodes(ctx context.Context) (map[string]uint64, error) {
	m := map[string]uint64{}
	for _, rel := range inodePaths {
		if rel == "/" {
			m[rel] = fx.fsys.Root().Ino()
			continue
		}
		n, err := fx.node(ctx, rel)
		if err != nil {
			return nil, err
		}
		m[rel] = n.Ino()
	}
	return m, nil
}

// fuseMount mounts fx.fsys with the FUSE frontend on the host and returns
// the mountpoint, or "" (with a log line) when /dev/fuse is not usable and
// STOREFS_E2E is not set. It is unmounted when the test ends.
func fuseMount(t *testing.T, fx *fixture) string {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		if e2etest.Enabled() {
			t.Fatalf("STOREFS_E2E=1 but /dev/fuse is not usable: %v", err)
		}
		t.Logf("no host FUSE mount to compare inode numbers with: %v", err)
		return ""
	}
	f.Close()
	dir := t.TempDir()
	srv, err := fuse.Mount(dir, fx.fsys, fuse.MountOptions{Options: fuse.Options{Logger: quietLog()}})
	if err != nil {
		t.Fatalf("FUSE mount on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("FUSE unmount of %s: %v", dir, err)
		}
	})
	return dir
}

// fuseInodes returns st_ino on the host FUSE mount of every path of
// inodePaths.
func (fx *fixture) fuseInodes(mnt string) (map[string]uint64, error) {
	m := map[string]uint64{}
	for _, rel := range inodePaths {
		p := mnt
		if rel != "/" {
			p = filepath.Join(mnt, fx.storePath(rel))
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return nil, fmt.Errorf("lstat on the FUSE mount: %w", err)
		}
		m[rel] = st.Ino
	}
	return m, nil
}

// guestPath returns where rel is in the guest when the store is mounted on
// mnt.
func (fx *fixture) guestPath(mnt, rel string) string {
	if rel == "/" {
		return mnt
	}
	return mnt + "/" + strings.TrimSuffix(fx.storePath(rel), "/.")
}

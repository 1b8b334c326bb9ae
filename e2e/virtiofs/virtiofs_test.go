// Package virtiofs_test mounts the store in a QEMU guest through storefs'
// own vhost-user-fs back-end (protocols/virtiofs) serving the FUSE
// frontend's RawFileSystem, and checks it with the Linux 6.1 virtiofs
// client as the NFS and 9P kernel tests do.
package virtiofs_test

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
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/e2e/vm"
	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/protocols/virtiofs"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/vfs"
)

const tag = "storefs"

// TestGuestMount boots a guest with a vhost-user-fs device on storefs'
// socket, mounts it, checks listing, content, symlinks, modes, shared
// inodes and write refusals, unmounts, and mounts again in the same boot
// (FUSE INIT after DESTROY on the same vhost-user connection).
func TestGuestMount(t *testing.T) {
	h := vm.NeedHost(t)
	src := filepath.Join(t.TempDir(), "tree")
	writeTree(t, src)
	fsys, base := importTree(t, src)
	sock := serve(t, fsys)

	manifest, err := vm.MD5Manifest(src)
	if err != nil {
		t.Fatal(err)
	}
	names, modes, err := expectTree(src)
	if err != nil {
		t.Fatal(err)
	}
	const mnt = "/mnt"
	root := mnt + "/" + base
	inodePaths := []string{
		"a/same.txt", "b/same.txt", // equal content: one inode
		"a/same-exec",  // same bytes, executable: another inode
		"dir1", "dir2", // equal directories: one inode
		"link1", "link2", // equal targets: one inode
	}
	guestPaths := make([]string, len(inodePaths))
	for i, p := range inodePaths {
		guestPaths[i] = root + "/" + p
	}

	s := vm.NewScript()
	s.MountVirtiofs("mount", vm.VirtiofsMount{Tag: tag, Dir: mnt})
	s.ExpectOutput("ls-root", "ls "+mnt, base+"\n")
	s.ExpectOutput("find", "cd "+root+" && find . | sort", names)
	s.ExpectOutput("modes", "cd "+root+" && find . ! -type l -exec stat -c '%n %a %F %h %u %g %Y' {} + | sort", modes)
	s.MD5Check("md5sum", root, manifest)
	s.ExpectOutput("readlink", fmt.Sprintf("cd %s && for l in link1 link2 a/up dangling; do readlink $l; done", root),
		"a/same.txt\na/same.txt\n../b/same.txt\nno-such-file\n")
	s.ExpectOutput("through-symlink", fmt.Sprintf("cat %s/link1 %s/a/up", root, root), "same\nsame\n")
	s.MustFail("dangling", "No such file or directory", []string{"cat " + root + "/dangling"})
	s.Inodes("inodes", guestPaths)
	s.WriteFails("read-only-root", mnt, "")
	s.WriteFails("read-only-dir", root+"/a", "same.txt")
	s.MustFail("read-only-file", vm.ReadOnlyError, []string{
		"sh -c 'echo x >> " + root + "/a/same.txt'",
		"truncate -s 0 " + root + "/a/same.txt",
		"chmod 0700 " + root,
	})
	s.Umount("umount", mnt)
	// Unmount sent DESTROY; this mount sends INIT over the same
	// connection.
	s.MountVirtiofs("mount-again", vm.VirtiofsMount{Tag: tag, Dir: mnt})
	s.MD5Check("md5sum-again", root, manifest)
	s.Umount("umount-again", mnt)

	res := h.Run(t, vm.Options{QEMUArgs: vm.VirtiofsQEMUArgs(sock, tag, 0), Timeout: 120 * time.Second}, s)
	c, ok := res.Check("inodes")
	if !ok || c.Status != vm.Pass {
		return
	}
	ino, err := c.Inodes()
	if err != nil {
		t.Fatal(err)
	}
	got := func(rel string) uint64 { return ino[root+"/"+rel] }
	for _, pair := range [][2]string{{"a/same.txt", "b/same.txt"}, {"dir1", "dir2"}, {"link1", "link2"}} {
		if got(pair[0]) != got(pair[1]) || got(pair[0]) == 0 {
			t.Errorf("inodes of %s and %s: %d and %d, want one", pair[0], pair[1], got(pair[0]), got(pair[1]))
		}
	}
	if got("a/same.txt") == got("a/same-exec") {
		t.Errorf("a plain and an executable file with the same bytes share inode %d", got("a/same.txt"))
	}
}

// writeTree writes the source tree: files (plain and executable, with
// duplicates), equal directories, symlinks and a larger file.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	files := map[string]struct {
		data []byte
		mode fs.FileMode
	}{
		"a/same.txt":            {[]byte("same\n"), 0o644},
		"b/same.txt":            {[]byte("same\n"), 0o644},
		"a/same-exec":           {[]byte("same\n"), 0o755},
		"dir1/x/leaf":           {[]byte("leaf\n"), 0o644},
		"dir2/x/leaf":           {[]byte("leaf\n"), 0o644},
		"empty":                 {nil, 0o644},
		"big.bin":               {big, 0o644},
		"bin/tool":              {big[:10_000], 0o755},
		"deep/er/and/deeper/ok": {[]byte("ok\n"), 0o644},
	}
	for i := range 40 {
		files[fmt.Sprintf("many/f%02d", i)] = struct {
			data []byte
			mode fs.FileMode
		}{[]byte(fmt.Sprint(i)), 0o644}
	}
	for name, f := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"link1": "a/same.txt", "link2": "a/same.txt", "a/up": "../b/same.txt", "dangling": "no-such-file"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
}

// expectTree renders what the guest's find and stat print for the tree
// as storefs shows it (spec/filesystem.md): directories 555 with 2 links,
// files 444 or 555 with 1, owner 0:0, mtime 1.
func expectTree(src string) (names, modes string, err error) {
	var n, m []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := "."
		if rel != "." {
			name = "./" + filepath.ToSlash(rel)
		}
		n = append(n, name)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			m = append(m, name+" 555 directory 2 0 0 1")
		case fi.Mode().IsRegular():
			perm, kind := "444", "regular file"
			if fi.Mode()&0o100 != 0 {
				perm = "555"
			}
			if fi.Size() == 0 {
				kind = "regular empty file"
			}
			m = append(m, fmt.Sprintf("%s %s %s 1 0 0 1", name, perm, kind))
		}
		return nil
	})
	sort.Strings(n)
	sort.Strings(m)
	return strings.Join(n, "\n") + "\n", strings.Join(m, "\n") + "\n", err
}

// importTree imports src into a memory store and returns a vfs over it
// (root listing on) and the store path's basename.
func importTree(t *testing.T, src string) (*vfs.FS, string) {
	t.Helper()
	store := memory.New()
	pi, err := importer.ImportPath(t.Context(), store, src, importer.Options{Logger: quietLog()})
	if err != nil {
		t.Fatalf("importing %s: %v", src, err)
	}
	fsys, err := vfs.New(store, vfs.Options{ListRoot: true, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return fsys, pi.StorePath.Basename()
}

// serve starts storefs' virtio-fs back-end for fsys on a new socket until
// the test ends and returns the socket's path.
func serve(t *testing.T, fsys *vfs.FS) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "virtiofs.sock")
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := &virtiofs.Server{
		Socket: sock,
		Tag:    tag,
		FileSystem: func() gofuse.RawFileSystem {
			return fuse.NewRawFileSystem(fsys, fuse.Options{Logger: log})
		},
		Logger: log,
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket left behind after Close: %v", err)
		}
	})
	return sock
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

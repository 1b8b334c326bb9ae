package fuse

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/storetest"
)

// TestDirectoryAliasing looks up two equal directories (one inode number,
// two paths) alternately from many goroutines while the kernel's dentry
// cache is dropped, which makes the kernel forget and look them up again.
// Every lookup must succeed and both must keep their shared st_ino.
func TestDirectoryAliasing(t *testing.T) {
	e2etest.NeedFUSE(t)
	s := localStore(t)
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	srv := mountFS(t, newVFS(t, s), MountOptions{})
	a := srv.Dir() + "/" + storetest.RootWithKeep
	b := srv.Dir() + "/" + storetest.RootComplicated + "/keep"
	var ino [2]uint64
	for i, p := range []string{a, b} {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		ino[i] = st.Ino
	}
	if ino[0] != ino[1] {
		t.Fatalf("equal directories have inodes %d and %d", ino[0], ino[1])
	}
	// A directory opened by one name stays that name after the other is
	// looked up: ".." of it is still its own parent (one shared directory
	// node would make the kernel move the dentry to the other name).
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	for range 3 {
		var st unix.Stat_t
		if err := unix.Stat(b, &st); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fstatat(int(fa.Fd()), "..", &st, 0); err != nil {
			t.Fatal(err)
		}
		if st.Ino != 1 {
			t.Errorf(".. of %s after a lookup of %s has inode %d, want the root's (1)", a, b, st.Ino)
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fa.Fd())); err != nil || got != a {
			t.Errorf("open directory %s is now called %q (%v)", a, got, err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Drop dentries and inodes while the readers run, when we may.
	dropper := func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
				return
			}
		}
	}
	wg.Go(dropper)
	var readers sync.WaitGroup
	for g := range 8 {
		readers.Go(func() {
			for i := range 300 {
				p := []string{a, b}[(g+i)%2]
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil {
					t.Errorf("stat %s: %v", p, err)
					return
				}
				if st.Ino != ino[0] {
					t.Errorf("stat %s: inode %d, want %d", p, st.Ino, ino[0])
					return
				}
				if _, err := os.ReadDir(p); err != nil {
					t.Errorf("readdir %s: %v", p, err)
					return
				}
				if _, err := os.ReadFile(p + "/.keep"); err != nil {
					t.Errorf("read %s/.keep: %v", p, err)
					return
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	wg.Wait()
}

// writeTree creates a source tree with every kind of node and duplicates.
func writeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "lib/a", "lib/b", "share/empty", "share/doc/x"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"bin/hello":            {"#!/bin/sh\necho hello\n", 0o755},
		"bin/same-bytes":       {"#!/bin/sh\necho hello\n", 0o644},
		"lib/a/lib.so":         {string(make([]byte, 300000)), 0o644},
		"lib/b/lib.so":         {string(make([]byte, 300000)), 0o644},
		"lib/a/empty":          {"", 0o644},
		"share/doc/README":     {"read me\n", 0o644},
		"share/doc/x/ünï cödé": {"unicode name\n", 0o644},
		"share/doc/x/.hidden":  {"hidden\n", 0o644},
	}
	for p, f := range files {
		must(os.WriteFile(filepath.Join(root, p), []byte(f.data), f.mode))
		must(os.Chmod(filepath.Join(root, p), f.mode))
	}
	must(os.Symlink("hello", filepath.Join(root, "bin/rel-link")))
	must(os.Symlink("../lib/a/lib.so", filepath.Join(root, "bin/up-link")))
	must(os.Symlink("/nix/store/does-not-exist", filepath.Join(root, "bin/abs-link")))
	must(os.Symlink("missing", filepath.Join(root, "share/dangling")))
}

// TestImportedTree imports a tree into a local store and compares the
// mount with the original: diff -r (content, names, symlink targets) and a
// walk comparing types, permission classes, sizes and targets.
func TestImportedTree(t *testing.T) {
	e2etest.NeedFUSE(t)
	diff := e2etest.NeedCommand(t, "diff")
	src := filepath.Join(t.TempDir(), "tree")
	writeTree(t, src)
	s := localStore(t)
	pi, err := importer.ImportPath(t.Context(), s, src, importer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := mountFS(t, newVFS(t, s), MountOptions{})
	mnt := filepath.Join(srv.Dir(), pi.StorePath.Basename())
	if out, err := exec.Command(diff, "-r", "--no-dereference", src, mnt).CombinedOutput(); err != nil {
		t.Errorf("diff -r %s %s: %v\n%s", src, mnt, err, out)
	}
	n := 0
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := os.Lstat(filepath.Join(mnt, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		n++
		if got.Mode().Type() != want.Mode().Type() {
			t.Errorf("%s: type %v, want %v", rel, got.Mode().Type(), want.Mode().Type())
		}
		switch {
		case want.Mode().IsRegular():
			perm := fs.FileMode(0o444)
			if want.Mode()&0o100 != 0 {
				perm = 0o555
			}
			if got.Mode().Perm() != perm || got.Size() != want.Size() {
				t.Errorf("%s: %v size %d, want %v size %d", rel, got.Mode(), got.Size(), perm, want.Size())
			}
		case want.IsDir():
			if got.Mode().Perm() != 0o555 {
				t.Errorf("%s: %v, want dr-xr-xr-x", rel, got.Mode())
			}
		case want.Mode()&fs.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, err := os.Readlink(filepath.Join(mnt, rel))
			if err != nil || gt != wt || got.Size() != int64(len(wt)) {
				t.Errorf("%s: -> %q (%v), size %d; want -> %q", rel, gt, err, got.Size(), wt)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 15 {
		t.Errorf("compared %d nodes, want every node of the tree", n)
	}
	// Equal content shares one inode number: lib/a and lib/b hold the same
	// file.
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(mnt+"/lib/a/lib.so", &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(mnt+"/lib/b/lib.so", &sb); err != nil {
		t.Fatal(err)
	}
	if sa.Ino != sb.Ino {
		t.Errorf("equal files have inodes %d and %d", sa.Ino, sb.Ino)
	}
	// tar reads every byte of the mount (GNU tar skips the data when its
	// output is /dev/null, so it goes through a pipe).
	if tar, err := exec.LookPath("tar"); err == nil {
		cmd := exec.Command(tar, "-C", mnt, "-cf", "-", ".")
		out, err := cmd.Output()
		if err != nil || len(out) < 600000 {
			t.Errorf("tar of the mount: %d bytes, %v", len(out), err)
		}
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	} else if sfs.Namelen != 255 || sfs.Flags&0x1 == 0 { // ST_RDONLY
		t.Errorf("statfs: namelen %d flags %#x, want 255 and read-only", sfs.Namelen, sfs.Flags)
	}
}

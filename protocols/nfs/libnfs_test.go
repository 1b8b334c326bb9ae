package nfs

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/vfs"
)

// makeTree writes a small tree with every kind of node and some edge
// cases, and returns its path.
func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	files := map[string]string{
		"hello.txt":          "hello\n",
		"empty":              "",
		"sub/deep/f":         "deep\n",
		"sub/g":              strings.Repeat("0123456789", 100000), // 1 MB, more than one READ at small sizes
		"unicode-ä ß.txt":    "ü\n",
		"dir with space/x":   "x",
		"sub/deep/emptydir/": "",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link": "hello.txt", "sub/up": "../hello.txt", "abs": "/nix/store/x-y", "dangling": "nope"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// libnfsServe imports tree into a memory store and serves it; it returns
// the store path basename and the URL query for the server's port.
func libnfsServe(t *testing.T, tree string, vopts vfs.Options) (string, string) {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	pi, err := importer.ImportPath(t.Context(), s, tree, importer.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	vopts.Logger = testLogger(t)
	fsys, err := vfs.New(s, vopts)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serveTest(t, fsys, Options{})
	_, port, _ := strings.Cut(addr, ":")
	return pi.StorePath.Basename(), fmt.Sprintf("?version=3&nfsport=%s&mountport=%s", port, port)
}

func runTool(t *testing.T, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// TestLibnfs reads an imported tree with libnfs's nfs-ls -R and nfs-cat,
// with plain URLs (libnfs calls MOUNT EXPORT after MNT), and compares it
// with the source.
func TestLibnfs(t *testing.T) {
	nfsls := e2etest.NeedCommand(t, "nfs-ls")
	nfscat := e2etest.NeedCommand(t, "nfs-cat")
	tree := makeTree(t)
	base, query := libnfsServe(t, tree, vfs.Options{ListRoot: true})

	// The expected nfs-ls -R lines: type and mode, nlink, uid, gid, size,
	// path (libnfs prints symlinks with the mode the server sends).
	var want []string
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == tree {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var line string
		switch {
		case fi.IsDir():
			line = "dr-xr-xr-x 2 0 0 * " + rel
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line = fmt.Sprintf("lr--r--r-- 1 0 0 %d %s", len(target), rel)
		case fi.Mode()&0o100 != 0:
			line = fmt.Sprintf("-r-xr-xr-x 1 0 0 %d %s", fi.Size(), rel)
		default:
			line = fmt.Sprintf("-r--r--r-- 1 0 0 %d %s", fi.Size(), rel)
		}
		want = append(want, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := runTool(t, nfsls, "-R", "nfs://127.0.0.1/"+base+query)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("nfs-ls line %q", l)
		}
		if f[0][0] == 'd' {
			f[4] = "*" // directory sizes are the Directory size field
		}
		got = append(got, strings.Join(f[:5], " ")+" "+strings.Join(strings.Fields(l)[5:], " "))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("nfs-ls -R:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Not sub/up: nfs-cat mounts the file's directory, and libnfs refuses
	// a symlink that climbs out of its mount ("resolves to invalid path").
	for _, rel := range []string{"hello.txt", "empty", "sub/deep/f", "sub/g", "unicode-ä ß.txt", "run.sh", "link"} {
		wantData, err := os.ReadFile(filepath.Join(tree, rel))
		if err != nil {
			t.Fatal(err)
		}
		data, err := runTool(t, nfscat, "nfs://127.0.0.1/"+base+"/"+rel+query)
		if err != nil {
			t.Errorf("nfs-cat %s: %v", rel, err)
			continue
		}
		if !bytes.Equal(data, wantData) {
			t.Errorf("nfs-cat %s: %d bytes, want %d", rel, len(data), len(wantData))
		}
	}

	// The root lists the one store path (list_root on).
	out, err = runTool(t, nfsls, "nfs://127.0.0.1/"+query)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " "+base) || strings.Count(string(out), "\n") != 1 {
		t.Errorf("nfs-ls root: %q, %v", out, err)
	}
}

// TestLibnfsListRootOff checks that libnfs sees the root listing refused
// and lookups by name still working.
func TestLibnfsListRootOff(t *testing.T) {
	nfsls := e2etest.NeedCommand(t, "nfs-ls")
	nfscat := e2etest.NeedCommand(t, "nfs-cat")
	tree := makeTree(t)
	base, query := libnfsServe(t, tree, vfs.Options{})
	if out, err := runTool(t, nfsls, "nfs://127.0.0.1/"+query); err == nil {
		t.Errorf("nfs-ls of the root with list_root off succeeded: %q", out)
	}
	if data, err := runTool(t, nfscat, "nfs://127.0.0.1/"+base+"/hello.txt"+query); err != nil || string(data) != "hello\n" {
		t.Errorf("nfs-cat by name: %q, %v", data, err)
	}
}

// TestLibnfsSendfile reads files of the embedded store with nfs-cat (with
// sendfile for loopback clients too, SendfileAlways): the
// READ replies that go out with sendfile (a blob file of its own, and a
// packed blob; odd sizes, so the last reply is padded) are what libnfs
// expects.
func TestLibnfsSendfile(t *testing.T) {
	nfscat := e2etest.NeedCommand(t, "nfs-cat")
	fsys, files := localFS(t, vfs.Options{ListRoot: true}) // nfs-cat mounts "/"
	srv, addr := serveTest(t, fsys, Options{Sendfile: SendfileAlways})
	_, port, _ := strings.Cut(addr, ":")
	query := fmt.Sprintf("?version=3&nfsport=%s&mountport=%s", port, port)
	for _, name := range []string{rootBig1, rootBig2, rootSmall} {
		// Two slashes: libnfs mounts the directory part of the path,
		// which one slash leaves empty.
		data, err := runTool(t, nfscat, "nfs://127.0.0.1//"+name+query)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, files[name]) {
			t.Errorf("nfs-cat %s: %d bytes that are not the file's %d", name, len(data), len(files[name]))
		}
	}
	if runtime.GOOS == "linux" && srv.spliced.Load() == 0 {
		t.Error("no READ reply went out with sendfile")
	}
}

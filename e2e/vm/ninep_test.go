package vm

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
)

// TestNinePDiod mounts a generated tree exported read-only by diod, a
// stand-in for the storefs 9P server, in the guest and checks it with
// every building block a frontend uses.
func TestNinePDiod(t *testing.T) {
	h := NeedHost(t)
	diod := e2etest.NeedCommand(t, "diod")
	tree := makeTree(t)
	port := startDiod(t, diod, tree)

	manifest, err := MD5Manifest(tree)
	if err != nil {
		t.Fatal(err)
	}
	wantLs, err := ListLong(t.Context(), h.Busybox, filepath.Join(tree, "data"))
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	if err := filepath.WalkDir(tree, func(string, fs.DirEntry, error) error { entries++; return nil }); err != nil {
		t.Fatal(err)
	}
	inodePaths := []string{"hello.txt", "data", "data/big.bin", "link", "many/f07"}
	guestPaths := make([]string, len(inodePaths))
	for i, p := range inodePaths {
		guestPaths[i] = "/mnt/" + p
	}

	s := NewScript()
	s.Mount9P("mount", NinePMount{Port: port, Aname: tree, Msize: 65536})
	s.LsLa("ls-la", "/mnt/data", wantLs)
	s.ExpectOutput("readlink", "readlink /mnt/link; readlink /mnt/data/up", "hello.txt\n../hello.txt\n")
	s.MD5Check("md5sum", "/mnt", manifest)
	s.CountEntries("find", "/mnt", entries)
	s.Inodes("inodes", guestPaths)
	s.WriteFails("read-only", "/mnt", "hello.txt")
	s.Umount("umount", "/mnt")
	res := h.Run(t, Options{Timeout: 90 * time.Second}, s)

	if c, ok := res.Check("inodes"); ok && c.Status == Pass {
		got, err := c.Inodes()
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range inodePaths {
			fi, err := os.Lstat(filepath.Join(tree, p))
			if err != nil {
				t.Fatal(err)
			}
			// diod's qid.path is the host's inode number.
			if want := NinePInode(fi.Sys().(*syscall.Stat_t).Ino); got[guestPaths[i]] != want {
				t.Errorf("guest inode of %s = %d, want %d (host inode %d + 2)", p, got[guestPaths[i]], want, fi.Sys().(*syscall.Stat_t).Ino)
			}
		}
	}
}

// makeTree writes a small tree of files, directories and symlinks that
// the unprivileged user diod serves the guest as can read.
func makeTree(t *testing.T) string {
	t.Helper()
	tree := t.TempDir()
	// The kernel attaches as "nobody": the test's 0700 temp dir must be
	// searchable.
	for _, d := range []string{filepath.Dir(tree), tree} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"hello.txt":                 []byte("hello, world\n"),
		"empty":                     nil,
		"bin/tool":                  random(10_000),
		"data/big.bin":              random(300_000),
		"data/nested/deep/file.txt": []byte("deep\n"),
	}
	for i := range 30 {
		files[fmt.Sprintf("many/f%02d", i)] = []byte(strconv.Itoa(i))
	}
	for name, data := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if name == "bin/tool" {
			mode = 0o755
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"link": "hello.txt", "data/up": "../hello.txt"} {
		if err := os.Symlink(target, filepath.Join(tree, link)); err != nil {
			t.Fatal(err)
		}
	}
	return tree
}

// lockedBuffer is a bytes.Buffer safe for a process writing while a test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDiod serves dir read-only over 9P on a free port of 127.0.0.1 until
// the test ends, and returns the port.
func startDiod(t *testing.T, diod, dir string) int {
	t.Helper()
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	// The export is read-only through the config file: "-e DIR -o ro"
	// leaves it writable. -n: no MUNGE authentication. Not -N: the kernel
	// attaches as "nobody", which diod looks up.
	conf := filepath.Join(t.TempDir(), "diod.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("exports = { { path = %q, opts = \"ro\" } }\n", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, diod, "-f", "-n", "-l", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		"-L", "stderr", "-c", conf)
	cmd.WaitDelay = 5 * time.Second
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting diod: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("diod log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return port
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("diod exited before listening (%v):\n%s", err, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("diod is not listening on port %d after 10s:\n%s", port, log.String())
		}
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

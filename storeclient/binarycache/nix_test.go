package binarycache_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/binarycache"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

// nixFixture is a set of binary caches written by real Nix.
type nixFixture struct {
	ca, ia  string            // absolute store paths: nix-store --add of an edge-case tree; a derivation output referring to it
	pubKey  string            // NAME:KEY that signed the caches
	caches  map[string]string // compression → cache directory
	closure []string          // nix path-info -r of ia, sorted
}

// nix runs a Nix command with the test environment and returns its
// standard output.
func nix(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = e2etest.NixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// makeEdgeTree writes a tree with every kind of entry Nix stores.
func makeEdgeTree(t *testing.T, dir string) {
	t.Helper()
	big := make([]byte, 3<<20+123) // streamed, not read whole
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"hello.txt", []byte("hello, storefs\n"), 0o644},
		{"bin/run.sh", []byte("#!/bin/sh\necho run\n"), 0o755},
		{"empty", nil, 0o644},
		{"empty-exec", nil, 0o755},
		{"sub/deep/big.bin", big, 0o644},
		{"ünïcødé ☃.txt", []byte("unicode\n"), 0o644},
		{"sub/.hidden", []byte("dot file\n"), 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, f.mode)
	}
	for _, d := range []string{"emptydir", "sub/emptydir2"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"rel-link":      "hello.txt",
		"dir-link":      "sub/deep",
		"abs-link":      "/nix/store/00000000000000000000000000000000-nowhere",
		"dangling":      "does/not/exist",
		"sub/up-link":   "../hello.txt",
		"ünï-link ☃":    "ünïcødé ☃.txt",
		"bin/self-link": ".",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
}

// newNixFixture builds the caches, or skips (fails under STOREFS_E2E=1)
// without Nix.
func newNixFixture(t *testing.T) *nixFixture {
	t.Helper()
	for _, c := range []string{"nix-store", "nix-build", "nix"} {
		e2etest.NeedCommand(t, c)
	}
	if os.Geteuid() != 0 {
		e2etest.Missing(t, "the Nix tests run single-user Nix as root")
	}
	w := t.TempDir()
	tree := filepath.Join(w, "storefs-bc-tree")
	makeEdgeTree(t, tree)
	f := &nixFixture{caches: map[string]string{}}
	f.ca = nix(t, "nix-store", "--add", tree)
	expr := `derivation { name = "storefs-bc-ia"; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ "-c" "echo refers to ${builtins.storePath "` + f.ca + `"} > $out" ]; }`
	drv := filepath.Join(w, "ia.nix")
	if err := os.WriteFile(drv, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	f.ia = nix(t, "nix-build", "--no-out-link", "--option", "sandbox", "false", drv)
	f.closure = strings.Fields(nix(t, "nix", "path-info", "-r", f.ia))
	slices.Sort(f.closure)
	if !slices.Contains(f.closure, f.ca) {
		t.Fatalf("closure of %s is %v, missing %s", f.ia, f.closure, f.ca)
	}
	sk, pk := filepath.Join(w, "sk"), filepath.Join(w, "pk")
	nix(t, "nix-store", "--generate-binary-cache-key", "storefs-test-1", sk, pk)
	b, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	f.pubKey = strings.TrimSpace(string(b))
	for _, c := range []string{"xz", "zstd", "none", "bzip2"} {
		dir := filepath.Join(w, "cache-"+c)
		nix(t, "nix", "copy", "--to", "file://"+dir+"?compression="+c+"&secret-key="+sk, f.ia)
		f.caches[c] = dir
	}
	return f
}

// compareWithNixStore checks that fsys shows the store path p (absolute)
// exactly as /nix/store holds it: names, types, modes, symlink targets,
// bytes.
func compareWithNixStore(t *testing.T, fsys *vfs.FS, p string) {
	t.Helper()
	c := vfstest.Direct(context.Background(), fsys)
	base := filepath.Base(p)
	var walk func(rel string)
	walk = func(rel string) {
		real := filepath.Join(storeclient.StoreDir, rel)
		fi, err := os.Lstat(real)
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Lstat(rel)
		if err != nil {
			t.Fatalf("lstat %s through vfs: %v", rel, err)
		}
		// Symlink permissions mean nothing on Linux; vfs shows 0444
		// (filesystem.md), Linux 0777.
		if st.Mode.Type() != fi.Mode().Type() || (fi.Mode()&fs.ModeSymlink == 0 && st.Mode != fi.Mode()) {
			t.Errorf("%s: vfs mode %v, /nix/store %v", rel, st.Mode, fi.Mode())
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			want, _ := os.Readlink(real)
			if got, err := c.Readlink(rel); err != nil || got != want {
				t.Errorf("%s: vfs target %q (%v), /nix/store %q", rel, got, err, want)
			}
		case fi.Mode().IsRegular():
			want, _ := os.ReadFile(real)
			got, err := c.ReadFile(rel)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: vfs content differs (%d vs %d bytes, %v)", rel, len(got), len(want), err)
			}
		case fi.IsDir():
			des, err := os.ReadDir(real)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, de := range des {
				want = append(want, de.Name())
			}
			es, err := c.ReadDir(rel, 0)
			if err != nil {
				t.Fatalf("readdir %s through vfs: %v", rel, err)
			}
			var got []string
			for _, e := range es {
				if e.Name != "." && e.Name != ".." {
					got = append(got, e.Name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: vfs lists %q, /nix/store %q", rel, got, want)
			}
			for _, n := range want {
				walk(rel + "/" + n)
			}
		}
	}
	walk(base)
}

// countingServer serves dir over HTTP on 127.0.0.1 and counts requests.
type countingServer struct {
	*httptest.Server
	narinfos, nars atomic.Int64
}

func serveCache(t *testing.T, dir string) *countingServer {
	t.Helper()
	cs := &countingServer{}
	files := http.FileServer(http.Dir(dir))
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, ".narinfo"):
			cs.narinfos.Add(1)
		case strings.HasPrefix(r.URL.Path, "/nar/"):
			cs.nars.Add(1)
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// logCounter counts records by message.
type logCounter struct {
	msgs chan string
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	select {
	case l.msgs <- r.Message:
	default:
	}
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) count(msg string) int {
	n := 0
	for {
		select {
		case m := <-l.msgs:
			if m == msg {
				n++
			}
		default:
			return n
		}
	}
}

// openNix opens a Store over rawURL with a memory cache store.
func openNix(t *testing.T, rawURL string) (*binarycache.Store, *memory.Store, *vfs.FS, *logCounter) {
	t.Helper()
	cfg, err := binarycache.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	cache := memory.New()
	lc := &logCounter{msgs: make(chan string, 1000)}
	s, err := binarycache.New(context.Background(), cfg, binarycache.Options{Cache: cache, OwnCache: true, Logger: slog.New(lc)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	fsys, err := vfs.New(s, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, cache, fsys, lc
}

func TestNixCaches(t *testing.T) {
	f := newNixFixture(t)
	for _, comp := range []string{"xz", "zstd", "none", "bzip2"} {
		dir := f.caches[comp]
		t.Run(comp+"/file", func(t *testing.T) {
			_, cache, fsys, _ := openNix(t, "nix+file://"+dir+"?trusted-public-keys="+f.pubKey)
			for _, p := range f.closure {
				compareWithNixStore(t, fsys, p)
			}
			if n := countPathInfos(t, cache); n != len(f.closure) {
				t.Errorf("cache store holds %d PathInfos, want %d", n, len(f.closure))
			}
		})
		t.Run(comp+"/http", func(t *testing.T) {
			srv := serveCache(t, dir)
			_, _, fsys, _ := openNix(t, "nix+"+srv.URL+"?trusted-public-keys="+f.pubKey)
			for _, p := range f.closure {
				compareWithNixStore(t, fsys, p)
			}
			// Everything again: served from the cache store, no requests.
			n1, n2 := srv.narinfos.Load(), srv.nars.Load()
			for _, p := range f.closure {
				compareWithNixStore(t, fsys, p)
			}
			if srv.narinfos.Load() != n1 || srv.nars.Load() != n2 {
				t.Errorf("a second walk made requests")
			}
			if n1 != int64(len(f.closure)) || n2 != int64(len(f.closure)) {
				t.Errorf("%d narinfo and %d NAR requests for %d paths", n1, n2, len(f.closure))
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		wrong := "storefs-test-1:" + strings.Repeat("A", 43) + "="
		_, cache, fsys, lc := openNix(t, "nix+file://"+f.caches["zstd"]+"?trusted-public-keys="+wrong)
		_, err := fsys.Lookup(context.Background(), fsys.Root(), filepath.Base(f.ia))
		if vfs.Errno(err) != syscall.ENOENT {
			t.Fatalf("lookup of the input-addressed path with a wrong key: %v, want ENOENT", err)
		}
		if n := lc.count("binary cache: refused untrusted path"); n != 1 {
			t.Errorf("%d refusal log lines, want 1", n)
		}
		compareWithNixStore(t, fsys, f.ca) // content-addressed: still served
		if n := countPathInfos(t, cache); n != 1 {
			t.Errorf("cache store holds %d PathInfos, want 1", n)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(f.caches["none"])); err != nil {
			t.Fatal(err)
		}
		// Flip one byte in the middle of the CA tree's NAR (its big file).
		ni, err := os.ReadFile(filepath.Join(dir, strings.SplitN(filepath.Base(f.ca), "-", 2)[0]+".narinfo"))
		if err != nil {
			t.Fatal(err)
		}
		var url string
		for l := range strings.Lines(string(ni)) {
			if u, ok := strings.CutPrefix(strings.TrimSpace(l), "URL: "); ok {
				url = u
			}
		}
		narFile := filepath.Join(dir, url)
		b, err := os.ReadFile(narFile)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		os.Chmod(narFile, 0o644)
		if err := os.WriteFile(narFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, cache, fsys, _ := openNix(t, "nix+file://"+dir+"?trusted-public-keys="+f.pubKey)
		_, err = fsys.Lookup(context.Background(), fsys.Root(), filepath.Base(f.ca))
		if vfs.Errno(err) != syscall.EIO {
			t.Fatalf("lookup of a tampered path: %v, want EIO", err)
		}
		if n := countPathInfos(t, cache); n != 0 {
			t.Errorf("cache store holds %d PathInfos after a failed fetch", n)
		}
	})
	t.Run("concurrent lookups", func(t *testing.T) {
		srv := serveCache(t, f.caches["xz"])
		s, _, fsys, _ := openNix(t, "nix+"+srv.URL+"?trusted-public-keys="+f.pubKey)
		const n = 8
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := fsys.Lookup(context.Background(), fsys.Root(), filepath.Base(f.ca))
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if srv.narinfos.Load() != 1 || srv.nars.Load() != 1 {
			t.Errorf("%d lookups: %d narinfo, %d NAR requests, want 1 and 1", n, srv.narinfos.Load(), srv.nars.Load())
		}
		_ = s
	})
}

func countPathInfos(t *testing.T, s storeclient.Store) int {
	t.Helper()
	n := 0
	for _, err := range s.ListPathInfos(context.Background()) {
		if err != nil && !errors.Is(err, storeclient.ErrNotFound) {
			t.Fatal(err)
		}
		n++
	}
	return n
}

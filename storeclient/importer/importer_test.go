package importer_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
	"github.com/storefs/storefs/storeclient/storepb"
)

// makeTree writes a tree with every edge case the importer must get right
// into dir/tree and returns its path.
func makeTree(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "tree")
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	file := func(rel string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
	}
	symlink := func(rel, target string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(rel string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file("file.txt", []byte("hello\n"), 0o644)
	file("exec.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	file("owner-exec-only", []byte("x"), 0o744)
	file("group-exec-only", []byte("x"), 0o654)
	file("empty", nil, 0o644)
	file("empty-exec", nil, 0o755)
	mkdir("emptydir")
	file("\xff\xfe", random(100), 0o644)
	file("ünïcödé-文件", []byte("unicode\n"), 0o644)
	file("sp ace", []byte("space"), 0o644)
	file("new\nline", []byte("newline"), 0o644)
	// Sort order: by raw name bytes, not by path ("a" < "a-b" < "a.b" < "a0" < "a\xc3").
	file("a/inner", []byte("in a"), 0o644)
	file("a-b", []byte("a-b"), 0o644)
	file("a.b/inner", []byte("in a.b"), 0o644)
	file("a0", []byte("a0"), 0o644)
	file("B", []byte("upper"), 0o644)
	for n := 7; n <= 9; n++ { // padding around 8
		file(filepath.Join("pad", strings.Repeat("p", n)), random(n), 0o644)
	}
	symlink("links/rel", "../file.txt")
	symlink("links/abs", "/etc/passwd")
	symlink("links/dangling", "does/not/exist")
	symlink("links/dir", "../emptydir")
	symlink("links/dotdot", "..")
	deep := "deep"
	for i := 0; i < 60; i++ {
		deep = filepath.Join(deep, "d")
	}
	file(filepath.Join(deep, "leaf"), []byte("bottom"), 0o644)
	file("sizes/exactly-1MiB", random(1<<20), 0o644)
	file("sizes/1MiB-plus-1", random(1<<20+1), 0o755)
	file("big.bin", random(3<<20+5), 0o644)
	for i := 0; i < 300; i++ { // many small files across the worker pool
		file(filepath.Join("many", strings.Repeat("f", 1+i%7)+string(rune('a'+i%26))+string(rune('a'+i/26))), random(i*37%5000), 0o644)
	}
	return root
}

func importPath(t *testing.T, s storeclient.Store, path string, opts importer.Options) *storeclient.PathInfo {
	t.Helper()
	info, err := importer.ImportPath(context.Background(), s, path, opts)
	if err != nil {
		t.Fatalf("ImportPath(%q): %v", path, err)
	}
	return info
}

func writeNAR(t *testing.T, s storeclient.Store, n storeclient.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := nar.WriteNAR(context.Background(), &buf, s, n); err != nil {
		t.Fatalf("WriteNAR: %v", err)
	}
	return buf.Bytes()
}

// nixStore runs nix-store against a throw-away chroot store.
func nixStore(t *testing.T, storeRoot string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("nix-store", append([]string{"--store", "local?root=" + storeRoot}, args...)...)
	cmd.Env = e2etest.NixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-store %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestImportPathMatchesNix compares the importer with real nix-store --add
// and nix-store --dump on every edge case.
func TestImportPathMatchesNix(t *testing.T) {
	e2etest.NeedCommand(t, "nix-store")
	dir := t.TempDir()
	root := makeTree(t, dir)
	nixRoot := filepath.Join(dir, "nix")
	s := memory.New()
	subjects := []string{
		root,
		root + "/",
		filepath.Join(root, "file.txt"),
		filepath.Join(root, "exec.sh"),
		filepath.Join(root, "owner-exec-only"),
		filepath.Join(root, "group-exec-only"),
		filepath.Join(root, "empty"),
		filepath.Join(root, "empty-exec"),
		filepath.Join(root, "emptydir"),
		filepath.Join(root, "links", "rel"),
		filepath.Join(root, "links", "abs"),
		filepath.Join(root, "links", "dangling"),
		filepath.Join(root, "links", "dir"),
		filepath.Join(root, "deep"),
		filepath.Join(root, "big.bin"),
		filepath.Join(root, "sizes"),
	}
	for _, p := range subjects {
		t.Run(strings.TrimPrefix(p, root), func(t *testing.T) {
			info := importPath(t, s, p, importer.Options{})
			want := strings.TrimSpace(string(nixStore(t, nixRoot, "--add", p)))
			if got := info.StorePath.Absolute(); got != want {
				t.Fatalf("store path %s, nix-store --add gives %s", got, want)
			}
			dump := nixStore(t, nixRoot, "--dump", filepath.Join(nixRoot, want))
			ours := writeNAR(t, s, info.Node)
			if !bytes.Equal(ours, dump) {
				t.Fatalf("WriteNAR (%d bytes) differs from nix-store --dump (%d bytes)", len(ours), len(dump))
			}
			if sum := sha256.Sum256(dump); info.NarSHA256 != sum || info.NarSize != uint64(len(dump)) {
				t.Fatalf("PathInfo NAR %d bytes %x, nix-store --dump %d bytes %x", info.NarSize, info.NarSHA256, len(dump), sum)
			}
			// ImportNAR of Nix's own dump gives the same PathInfo.
			back, err := importer.ImportNAR(context.Background(), s, bytes.NewReader(dump), info.StorePath.Name)
			if err != nil {
				t.Fatal(err)
			}
			checkSamePathInfo(t, back, info)
		})
	}
}

func checkSamePathInfo(t *testing.T, got, want *storeclient.PathInfo) {
	t.Helper()
	if !bytes.Equal(got.Marshal(), want.Marshal()) {
		t.Fatalf("PathInfo differs:\n got %+v\nwant %+v", got, want)
	}
}

// TestImportPathKnownAnswers checks against store paths computed once by
// real Nix 2.8 (nix-store --add), so that the check runs without Nix.
func TestImportPathKnownAnswers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := memory.New()
	cases := []struct {
		path, want string
		narSHA256  string
	}{
		{write("hello", "Hello World!", 0o644), "/nix/store/n4hss129xrln71w0nss39bcx6hzsh9bg-hello",
			"03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040"},
		{write("hx", "Hello World!", 0o755), "/nix/store/g6vi73a5klzlrj7y31rs9h9l5z7cf066-hx", ""},
	}
	for _, c := range cases {
		info := importPath(t, s, c.path, importer.Options{})
		if got := info.StorePath.Absolute(); got != c.want {
			t.Errorf("%s: store path %s, want %s", c.path, got, c.want)
		}
		if c.narSHA256 != "" && info.NarSize != 128 {
			t.Errorf("%s: NAR size %d, want 128", c.path, info.NarSize)
		}
		if info.CA == nil || info.CA.Type != storepb.NARInfo_CA_NAR_SHA256 || !bytes.Equal(info.CA.Digest, info.NarSHA256[:]) {
			t.Errorf("%s: CA = %+v, want NAR_SHA256 of the NAR hash", c.path, info.CA)
		}
		got, err := s.GetPathInfo(context.Background(), info.StorePath.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkSamePathInfo(t, got, info)
	}
}

// TestImportPathRoundTrip runs without Nix: the NAR of an imported tree
// re-imports (plain, xz, zstd) to the same PathInfo, and re-importing the
// tree is idempotent.
func TestImportPathRoundTrip(t *testing.T) {
	root := makeTree(t, t.TempDir())
	s := memory.New()
	info := importPath(t, s, root, importer.Options{})
	ours := writeNAR(t, s, info.Node)
	if sum := sha256.Sum256(ours); sum != info.NarSHA256 || uint64(len(ours)) != info.NarSize {
		t.Fatalf("WriteNAR of the import: %d bytes %x; PathInfo says %d bytes %x", len(ours), sum, info.NarSize, info.NarSHA256)
	}
	for _, p := range []int{1, 3, 16} {
		again := importPath(t, s, root, importer.Options{Parallelism: p})
		checkSamePathInfo(t, again, info)
	}
	// Compressing megabytes of random data with xz in pure Go is slow: the
	// compressed cases use a smaller subtree.
	small := importPath(t, s, filepath.Join(root, "pad"), importer.Options{})
	smallNAR := writeNAR(t, s, small.Node)
	for _, c := range []struct {
		name string
		want *storeclient.PathInfo
		nar  []byte
		data []byte
	}{
		{"plain", info, ours, ours},
		{"xz", small, smallNAR, compressXZ(t, smallNAR)},
		{"zstd", info, ours, compressZstd(t, ours)},
	} {
		t.Run(c.name, func(t *testing.T) {
			fresh := memory.New()
			back, err := importer.ImportNAR(context.Background(), fresh, bytes.NewReader(c.data), c.want.StorePath.Name)
			if err != nil {
				t.Fatal(err)
			}
			checkSamePathInfo(t, back, c.want)
			if got := writeNAR(t, fresh, back.Node); !bytes.Equal(got, c.nar) {
				t.Fatal("NAR of the re-imported tree differs")
			}
		})
	}
}

func TestImportPathName(t *testing.T) {
	root := makeTree(t, t.TempDir())
	s := memory.New()
	info := importPath(t, s, filepath.Join(root, "file.txt"), importer.Options{Name: "renamed"})
	if info.StorePath.Name != "renamed" {
		t.Fatalf("name %q, want renamed", info.StorePath.Name)
	}
	for _, bad := range []string{filepath.Join(root, "sp ace"), filepath.Join(root, "ünïcödé-文件"), root + "//"} {
		if _, err := importer.ImportPath(context.Background(), s, bad, importer.Options{}); err == nil {
			t.Errorf("ImportPath(%q) accepted an invalid store path name", bad)
		}
	}
	if _, err := importer.ImportPath(context.Background(), s, filepath.Join(root, "sp ace"), importer.Options{Name: "ok"}); err != nil {
		t.Errorf("ImportPath with --name of a file whose own name is invalid: %v", err)
	}
}

func TestNixBaseName(t *testing.T) {
	cases := map[string]string{
		"a": "a", "a/b": "b", "/x/y/": "y", "d//": "", "/": "", "./d": "d", "d/.": ".",
	}
	for in, want := range cases {
		if got := importer.NixBaseName(in); got != want {
			t.Errorf("NixBaseName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImportPathUnsupportedTypes(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "tree", "sub", "fifo")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(dir, "socktree")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := []struct{ path, want string }{
		{filepath.Join(dir, "tree"), fifo},
		{fifo, fifo},
		{sockDir, sock},
		{"/dev/null", "/dev/null"},
	}
	s := memory.New()
	for _, c := range cases {
		_, err := importer.ImportPath(context.Background(), s, c.path, importer.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ImportPath(%q) = %v, want an error naming %s", c.path, err, c.want)
		}
	}
	if n := countPathInfos(t, s); n != 0 {
		t.Fatalf("%d PathInfos stored by failed imports", n)
	}
	if _, err := importer.ImportPath(context.Background(), s, filepath.Join(dir, "missing"), importer.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ImportPath of a missing path = %v, want ErrNotExist", err)
	}
}

func countPathInfos(t *testing.T, s storeclient.Store) int {
	t.Helper()
	n := 0
	for _, err := range s.ListPathInfos(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// cancellingStore cancels a context at its nth blob write.
type cancellingStore struct {
	*memory.Store
	cancel context.CancelFunc
	after  int32
	writes atomic.Int32
}

func (c *cancellingStore) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	if c.writes.Add(1) == c.after {
		c.cancel()
	}
	return c.Store.NewBlobWriter(ctx)
}

func TestImportCancellation(t *testing.T) {
	root := makeTree(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	s := &cancellingStore{Store: memory.New(), cancel: cancel, after: 3}
	_, err := importer.ImportPath(ctx, s, root, importer.Options{Parallelism: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ImportPath after cancel = %v, want context.Canceled", err)
	}
	if n := countPathInfos(t, s); n != 0 {
		t.Fatalf("a cancelled import stored %d PathInfos", n)
	}

	done, stop := context.WithCancel(context.Background())
	stop()
	if _, err := importer.ImportPath(done, memory.New(), root, importer.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("ImportPath with a cancelled context = %v", err)
	}
	var buf bytes.Buffer
	full := memory.New()
	info := importPath(t, full, root, importer.Options{})
	buf.Write(writeNAR(t, full, info.Node))
	if _, err := importer.ImportNAR(done, memory.New(), &buf, "tree"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ImportNAR with a cancelled context = %v", err)
	}
}

func TestImportNARRejects(t *testing.T) {
	root := makeTree(t, t.TempDir())
	s := memory.New()
	info := importPath(t, s, filepath.Join(root, "links"), importer.Options{})
	good := writeNAR(t, s, info.Node)
	cases := map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("this is not a NAR at all, not even close"),
		"truncated": good[:len(good)-8],
		"trailing":  append(append([]byte{}, good...), make([]byte, 8)...),
		"bad xz":    append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, 1, 2, 3),
		"bad zstd":  append([]byte{0x28, 0xb5, 0x2f, 0xfd}, 1, 2, 3),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			fresh := memory.New()
			_, err := importer.ImportNAR(context.Background(), fresh, bytes.NewReader(data), "x")
			if err == nil {
				t.Fatal("malformed NAR accepted")
			}
			if strings.HasPrefix(name, "bad ") && !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("error %v does not mean corrupt data", err)
			}
			if n := countPathInfos(t, fresh); n != 0 {
				t.Fatalf("%d PathInfos stored", n)
			}
		})
	}
	if _, err := importer.ImportNAR(context.Background(), s, bytes.NewReader(good), "bad name"); err == nil {
		t.Fatal("invalid name accepted")
	}
}

// TestImportPlainNAR checks that ImportPlainNAR imports a NAR as it is:
// a compressed one is not a NAR.
func TestImportPlainNAR(t *testing.T) {
	root := makeTree(t, t.TempDir())
	s := memory.New()
	info := importPath(t, s, filepath.Join(root, "links"), importer.Options{})
	plain := writeNAR(t, s, info.Node)
	back, err := importer.ImportPlainNAR(context.Background(), memory.New(), bytes.NewReader(plain), info.StorePath.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkSamePathInfo(t, back, info)
	fresh := memory.New()
	if _, err := importer.ImportPlainNAR(context.Background(), fresh, bytes.NewReader(compressZstd(t, plain)), "x"); !errors.Is(err, nar.ErrMalformed) {
		t.Fatalf("ImportPlainNAR of a zstd file: %v, want a malformed NAR", err)
	}
	if n := countPathInfos(t, fresh); n != 0 {
		t.Fatalf("%d PathInfos stored", n)
	}
	if _, err := importer.ImportPlainNAR(context.Background(), s, bytes.NewReader(plain), "bad name"); err == nil {
		t.Fatal("invalid name accepted")
	}
}

// TestImportNARCompressedByTools decompresses NARs made by the real xz,
// zstd and bzip2 programs.
func TestImportNARCompressedByTools(t *testing.T) {
	root := makeTree(t, t.TempDir())
	s := memory.New()
	info := importPath(t, s, filepath.Join(root, "many"), importer.Options{})
	plain := writeNAR(t, s, info.Node)
	for _, tool := range [][]string{{"xz", "-c", "-T2"}, {"zstd", "-c", "-q"}, {"bzip2", "-c"}} {
		t.Run(tool[0], func(t *testing.T) {
			e2etest.NeedCommand(t, tool[0])
			cmd := exec.Command(tool[0], tool[1:]...)
			cmd.Stdin = bytes.NewReader(plain)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			back, err := importer.ImportNAR(context.Background(), memory.New(), bytes.NewReader(out), "many")
			if err != nil {
				t.Fatal(err)
			}
			checkSamePathInfo(t, back, info)
		})
	}
}

// orderStore records the order of writes, and offers the batch
// Directory put that the local store has.
type orderStore struct {
	*memory.Store
	mu      sync.Mutex
	events  []string
	batches int
}

func (o *orderStore) record(e string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

func (o *orderStore) PutDirectories(ctx context.Context, dirs []*storeclient.Directory) error {
	o.mu.Lock()
	o.batches++
	o.mu.Unlock()
	for _, d := range dirs {
		// The memory store refuses a Directory whose children are missing,
		// so this also checks that batches come leaves first.
		if _, err := o.Store.PutDirectory(ctx, d); err != nil {
			return err
		}
		o.record("directory")
	}
	return nil
}

func (o *orderStore) PutDirectory(ctx context.Context, d *storeclient.Directory) (storeclient.Digest, error) {
	o.record("single directory")
	return o.Store.PutDirectory(ctx, d)
}

func (o *orderStore) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	o.record("pathinfo")
	return o.Store.PutPathInfo(ctx, p)
}

func (o *orderStore) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	o.record("blob")
	return o.Store.NewBlobWriter(ctx)
}

// TestImportWriteOrder checks that Directories go through the batch put,
// leaves first, and that the PathInfo is written last, so an interrupted
// import never leaves a PathInfo whose content is missing.
func TestImportWriteOrder(t *testing.T) {
	root := makeTree(t, t.TempDir())
	for _, imp := range []struct {
		name string
		run  func(s storeclient.Store) (*storeclient.PathInfo, error)
	}{
		{"path", func(s storeclient.Store) (*storeclient.PathInfo, error) {
			return importer.ImportPath(context.Background(), s, root, importer.Options{})
		}},
		{"nar", func(s storeclient.Store) (*storeclient.PathInfo, error) {
			m := memory.New()
			info := importPath(t, m, root, importer.Options{})
			return importer.ImportNAR(context.Background(), s, bytes.NewReader(writeNAR(t, m, info.Node)), "tree")
		}},
	} {
		t.Run(imp.name, func(t *testing.T) {
			s := &orderStore{Store: memory.New()}
			if _, err := imp.run(s); err != nil {
				t.Fatal(err)
			}
			if s.batches == 0 {
				t.Fatal("PutDirectories was never used")
			}
			for i, e := range s.events {
				if e == "single directory" {
					t.Fatal("PutDirectory used although the store has PutDirectories")
				}
				if e == "pathinfo" && i != len(s.events)-1 {
					t.Fatalf("PathInfo written at position %d of %d: %v", i, len(s.events), s.events[i:])
				}
			}
			if s.events[len(s.events)-1] != "pathinfo" {
				t.Fatal("no PathInfo written last")
			}
		})
	}
}

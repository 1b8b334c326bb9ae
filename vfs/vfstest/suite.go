package vfstest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// Frontend is what a frontend gives the suite.
type Frontend struct {
	// Serve starts the frontend's server over fsys and returns a client of
	// it. It stops the server (and checks that it stopped) in t.Cleanup.
	// It is called once per case, and twice by the restart case.
	Serve func(t *testing.T, fsys *vfs.FS) Client
	// Skip names the cases the frontend cannot express, each with the
	// reason (e.g. "24-xattrs": "NFSv3 has no extended attributes"). The
	// suite reports them as skipped with that reason.
	Skip map[string]string
}

// Run runs every case of the suite as a subtest of t, in order. Cases do
// not run in parallel (case 1 checks for leaked goroutines).
func Run(t *testing.T, fe Frontend) {
	t.Helper()
	for name := range fe.Skip {
		if !slices.Contains(CaseNames(), name) {
			t.Errorf("vfstest: Frontend.Skip names unknown case %q", name)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if reason, ok := fe.Skip[c.name]; ok {
				t.Skip(reason)
			}
			var s storeclient.Store
			if c.store != nil {
				s = c.store(t)
			} else {
				s = fixtureStore(t, storetest.FillOptions{})
			}
			e := &env{fe: fe, store: s, opts: c.opts, logs: &logBuffer{}}
			if !c.servesItself {
				e.c = e.serve(t)
			}
			c.run(t, e)
		})
	}
}

// CaseNames returns the names of the cases, in the order Run runs them.
func CaseNames() []string {
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	return names
}

type testCase struct {
	name  string
	store func(t *testing.T) storeclient.Store // nil: the fixtures of vectors.md
	opts  vfs.Options
	run   func(t *testing.T, e *env)
	// servesItself says the case starts its own servers: e.c is nil.
	// A case that counts goroutines needs it, because a server running
	// next to the one it looks at may start goroutines meanwhile (go-fuse
	// starts a reader when the kernel sends a request, such as the
	// FORGETs of a cache drop).
	servesItself bool
}

// env is one case's store, options and client.
type env struct {
	fe    Frontend
	store storeclient.Store
	opts  vfs.Options
	c     Client
	logs  *logBuffer // what vfs logged
}

// serve builds a fresh vfs over the case's store and serves it.
func (e *env) serve(t *testing.T) Client {
	t.Helper()
	opts := e.opts
	if opts.Logger == nil {
		opts.Logger = testLogger(t, e.logs)
	}
	fsys, err := vfs.New(e.store, opts)
	if err != nil {
		t.Fatalf("vfs.New: %v", err)
	}
	return e.fe.Serve(t, fsys)
}

// The root names of vectors.md, and the extra ones some cases add.
const (
	rootA        = storetest.RootBlobA
	rootB        = storetest.RootBlobB
	rootExec     = storetest.RootHelloExec
	rootLinkA    = storetest.RootSymlinkA
	rootLinkOut  = storetest.RootSymlinkOut
	rootKeep     = storetest.RootWithKeep
	rootComplex  = storetest.RootComplicated
	rootExecA    = "77777777777777777777777777777777-test" // BLOB_A, executable
	rootLyingDir = "88888888888888888888888888888888-test" // a Directory whose child "keep" records size 99
	rootLyingTop = "99999999999999999999999999999999-test" // DIRECTORY_WITH_KEEP recorded with size 5
)

// fixtureStore returns a memory store holding the fixtures, closed at the
// end of the test.
func fixtureStore(t *testing.T, opts storetest.FillOptions) *memory.Store {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(t.Context(), s, opts); err != nil {
		t.Fatalf("fill fixtures: %v", err)
	}
	return s
}

func putRoot(t *testing.T, s storeclient.Store, name string, n storeclient.Node) {
	t.Helper()
	p, err := storetest.PathInfoFor(name, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(t.Context(), p); err != nil {
		t.Fatal(err)
	}
}

var (
	digestA    = storeclient.HashBytes(storetest.BlobA)
	digestB    = storeclient.HashBytes(storetest.BlobB)
	fixtures   = storetest.NewFixtures()
	digestKeep = fixtures.DirectoryWithKeep.Digest()
)

// errnoOf returns the errno an error carries, or 0 and false if it carries
// none.
func errnoOf(err error) (syscall.Errno, bool) {
	var ve *vfs.Error
	if errors.As(err, &ve) {
		return ve.Errno, true
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en, true
	}
	return 0, false
}

// wantErr fails unless err carries one of the errnos.
func wantErr(t *testing.T, what string, err error, errnos ...syscall.Errno) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, errnos)
		return
	}
	en, ok := errnoOf(err)
	if !ok {
		t.Errorf("%s: error %v carries no errno, want %v", what, err, errnos)
		return
	}
	if !slices.Contains(errnos, en) {
		t.Errorf("%s: %v (errno %d %v), want %v", what, err, int(en), en, errnos)
	}
}

func mustStat(t *testing.T, c Client, path string, follow bool) Stat {
	t.Helper()
	var st Stat
	var err error
	if follow {
		st, err = c.Stat(path)
	} else {
		st, err = c.Lstat(path)
	}
	if err != nil {
		t.Fatalf("stat %q: %v", path, err)
	}
	return st
}

func mustRead(t *testing.T, c Client, path string) []byte {
	t.Helper()
	b, err := c.ReadFile(path)
	if err != nil {
		t.Fatalf("read %q: %v", path, err)
	}
	return b
}

// names lists a directory without "." and "..".
func names(t *testing.T, c Client, path string, batch int) []DirEntry {
	t.Helper()
	es, err := c.ReadDir(path, batch)
	if err != nil {
		t.Fatalf("readdir %q: %v", path, err)
	}
	return slices.DeleteFunc(es, func(e DirEntry) bool { return e.Name == "." || e.Name == ".." })
}

// checkAttr compares the attributes of docs/filesystem.md.
func checkAttr(t *testing.T, path string, st Stat, mode fs.FileMode, size int64, nlink uint64) {
	t.Helper()
	gotMode := st.Mode
	if st.Mode&fs.ModeSymlink != 0 && mode&fs.ModeSymlink != 0 && st.Mode.Perm() == 0o777 {
		gotMode = mode // symlinks may be shown as 0777
	}
	if gotMode != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode, mode)
	}
	if st.Size != size {
		t.Errorf("%s: size %d, want %d", path, st.Size, size)
	}
	if st.Nlink != nlink {
		t.Errorf("%s: nlink %d, want %d", path, st.Nlink, nlink)
	}
	if st.UID != 0 || st.GID != 0 {
		t.Errorf("%s: uid/gid %d/%d, want 0/0", path, st.UID, st.GID)
	}
	if st.Mtime.Unix() != 1 {
		t.Errorf("%s: mtime %v, want 1 s after the epoch", path, st.Mtime)
	}
	wantBlocks := int64(0)
	if mode.IsRegular() {
		wantBlocks = (size + 511) / 512
	}
	if st.Blocks != wantBlocks {
		t.Errorf("%s: blocks %d, want %d", path, st.Blocks, wantBlocks)
	}
}

var cases = append(baseCases, remoteCases()...)

var baseCases = []testCase{
	{name: "01-serve-stop", servesItself: true, run: func(t *testing.T, e *env) {
		// Serve a second time inside a subtest, so its cleanup (the stop)
		// runs before we look for leaked goroutines.
		ignore := goleak.IgnoreCurrent()
		t.Run("serve", func(t *testing.T) {
			c := e.serve(t)
			if st := mustStat(t, c, "", true); !st.Mode.IsDir() {
				t.Errorf("root mode %v, want a directory", st.Mode)
			}
			mustRead(t, c, rootA)
		})
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines left after stop: %v", err)
		}
	}},
	{name: "02-list-root-off", run: func(t *testing.T, e *env) {
		_, err := e.c.ReadDir("", 0)
		wantErr(t, "list root", err, syscall.EPERM)
		if _, err := e.c.Stat(rootA); err != nil {
			t.Errorf("lookup by name with list_root off: %v", err)
		}
	}},
	{name: "03-list-root-one", opts: vfs.Options{ListRoot: true},
		store: func(t *testing.T) storeclient.Store {
			skip := map[string]bool{}
			for name := range fixtures.RootNodes() {
				skip[name] = name != rootA
			}
			return fixtureStore(t, storetest.FillOptions{SkipRoots: skip})
		},
		run: func(t *testing.T, e *env) {
			es := names(t, e.c, "", 0)
			if len(es) != 1 || es[0].Name != rootA || es[0].Type != 0 {
				t.Fatalf("root lists %v, want one regular file %s", es, rootA)
			}
			checkAttr(t, rootA, mustStat(t, e.c, rootA, false), 0o444, 2, 1)
		}},
	{name: "04-list-root-10000", opts: vfs.Options{ListRoot: true},
		store: func(t *testing.T) storeclient.Store {
			s := memory.New()
			t.Cleanup(func() { s.Close() })
			if err := storetest.PutBlob(t.Context(), s, storetest.BlobA); err != nil {
				t.Fatal(err)
			}
			for _, name := range manyRoots() {
				putRoot(t, s, name, storeclient.FileNode(digestA, 2, false))
			}
			return s
		},
		run: func(t *testing.T, e *env) {
			want := manyRoots()
			slices.Sort(want)
			for _, batch := range []int{1, 7, 100, 0} {
				es := names(t, e.c, "", batch)
				got := make([]string, len(es))
				for i, en := range es {
					got[i] = en.Name
				}
				if !slices.Equal(got, want) {
					t.Errorf("batch %d: %d names listed, want %d sorted, each once (first difference at %d)", batch, len(got), len(want), firstDiff(got, want))
				}
			}
		}},
	{name: "05-stat-root-file", run: func(t *testing.T, e *env) {
		checkAttr(t, rootA, mustStat(t, e.c, rootA, true), 0o444, 2, 1)
	}},
	{name: "06-read-root-file", run: func(t *testing.T, e *env) {
		if b := mustRead(t, e.c, rootA); !bytes.Equal(b, storetest.BlobA) {
			t.Errorf("read %s = %x, want 0001", rootA, b)
		}
	}},
	{name: "07-read-large-file", run: func(t *testing.T, e *env) {
		if b := mustRead(t, e.c, rootB); !bytes.Equal(b, storetest.BlobB) {
			t.Errorf("read %s: %d bytes, not BLOB_B", rootB, len(b))
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 50; i++ {
			off := rng.Int64N(int64(len(storetest.BlobB)))
			p := make([]byte, 1+rng.IntN(300000))
			n, err := e.c.ReadAt(rootB, p, off)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("ReadAt(%d bytes at %d): %v", len(p), off, err)
			}
			want := storetest.BlobB[off:min(off+int64(len(p)), int64(len(storetest.BlobB)))]
			if !bytes.Equal(p[:n], want) {
				t.Fatalf("ReadAt(%d bytes at %d): got %d bytes, not the blob's %d", len(p), off, n, len(want))
			}
		}
	}},
	{name: "08-readlink-root-symlink", run: func(t *testing.T, e *env) {
		got, err := e.c.Readlink(rootLinkA)
		if err != nil || got != rootA {
			t.Errorf("readlink %s = %q, %v; want %q", rootLinkA, got, err, rootA)
		}
	}},
	{name: "09-stat-dangling-symlink", run: func(t *testing.T, e *env) {
		_, err := e.c.Stat(rootLinkOut)
		wantErr(t, "stat through "+rootLinkOut, err, syscall.ENOENT)
	}},
	{name: "10-through-symlink", run: func(t *testing.T, e *env) {
		if b := mustRead(t, e.c, rootLinkA); !bytes.Equal(b, storetest.BlobA) {
			t.Errorf("read through %s = %x, want 0001", rootLinkA, b)
		}
		checkAttr(t, rootLinkA, mustStat(t, e.c, rootLinkA, true), 0o444, 2, 1)
	}},
	{name: "11-stat-root-dir", run: func(t *testing.T, e *env) {
		checkAttr(t, rootKeep, mustStat(t, e.c, rootKeep, true), fs.ModeDir|0o555, 2, 2)
	}},
	{name: "12-read-empty-file", run: func(t *testing.T, e *env) {
		if b := mustRead(t, e.c, rootKeep+"/.keep"); len(b) != 0 {
			t.Errorf("read .keep: %d bytes, want 0", len(b))
		}
	}},
	{name: "13-read-deep", run: func(t *testing.T, e *env) {
		if b := mustRead(t, e.c, rootComplex+"/keep/.keep"); len(b) != 0 {
			t.Errorf("read keep/.keep: %d bytes, want 0", len(b))
		}
	}},
	{name: "14-list-dir", run: func(t *testing.T, e *env) {
		want := []DirEntry{{".keep", 0}, {"aa", fs.ModeSymlink}, {"keep", fs.ModeDir}}
		for _, batch := range []int{0, 1} {
			if got := names(t, e.c, rootComplex, batch); !slices.Equal(got, want) {
				t.Errorf("list %s (batch %d) = %v, want %v", rootComplex, batch, got, want)
			}
		}
	}},
	{name: "15-list-subdir", run: func(t *testing.T, e *env) {
		want := []DirEntry{{".keep", 0}}
		if got := names(t, e.c, rootComplex+"/keep", 0); !slices.Equal(got, want) {
			t.Errorf("list keep = %v, want %v", got, want)
		}
	}},
	{name: "16-attributes", run: func(t *testing.T, e *env) {
		checkAttr(t, "root", mustStat(t, e.c, "", false), fs.ModeDir|0o555, mustStat(t, e.c, "", false).Size, 2)
		if st := mustStat(t, e.c, "", false); st.Ino != vfs.RootIno {
			t.Errorf("root inode %d, want 1", st.Ino)
		}
		checkAttr(t, rootA, mustStat(t, e.c, rootA, false), 0o444, 2, 1)
		checkAttr(t, rootB, mustStat(t, e.c, rootB, false), 0o444, int64(len(storetest.BlobB)), 1)
		checkAttr(t, rootExec, mustStat(t, e.c, rootExec, false), 0o555, 12, 1)
		checkAttr(t, rootKeep, mustStat(t, e.c, rootKeep, false), fs.ModeDir|0o555, 2, 2)
		checkAttr(t, rootComplex, mustStat(t, e.c, rootComplex, false), fs.ModeDir|0o555, 8, 2)
		checkAttr(t, rootComplex+"/keep", mustStat(t, e.c, rootComplex+"/keep", false), fs.ModeDir|0o555, 2, 2)
		checkAttr(t, rootComplex+"/.keep", mustStat(t, e.c, rootComplex+"/.keep", false), 0o444, 0, 1)
		checkAttr(t, rootLinkA, mustStat(t, e.c, rootLinkA, false), fs.ModeSymlink|0o444, int64(len(rootA)), 1)
		checkAttr(t, rootComplex+"/aa", mustStat(t, e.c, rootComplex+"/aa", false), fs.ModeSymlink|0o444, int64(len(storetest.SymlinkOutTarget)), 1)
	}},
	{name: "17-same-inode", run: func(t *testing.T, e *env) {
		for _, pair := range [][2]string{
			{rootKeep, rootComplex + "/keep"},
			{rootKeep + "/.keep", rootComplex + "/.keep"},
			{rootComplex + "/aa", rootLinkOut},
		} {
			a, b := mustStat(t, e.c, pair[0], false), mustStat(t, e.c, pair[1], false)
			if a.Ino != b.Ino {
				t.Errorf("inode of %s = %d, of %s = %d; want equal", pair[0], a.Ino, pair[1], b.Ino)
			}
			if a.Ino == 0 || a.Ino == vfs.RootIno {
				t.Errorf("inode of %s = %d", pair[0], a.Ino)
			}
		}
		// The empty Directory and the empty blob share a digest but not an
		// inode: kinds never share one.
		if a, b := mustStat(t, e.c, rootKeep, false), mustStat(t, e.c, rootKeep+"/.keep", false); a.Ino == b.Ino {
			t.Errorf("directory and file share inode %d", a.Ino)
		}
	}},
	{name: "18-exec-distinct-inode",
		store: func(t *testing.T) storeclient.Store {
			s := fixtureStore(t, storetest.FillOptions{})
			putRoot(t, s, rootExecA, storeclient.FileNode(digestA, 2, true))
			return s
		},
		run: func(t *testing.T, e *env) {
			plain, exec := mustStat(t, e.c, rootA, false), mustStat(t, e.c, rootExecA, false)
			if plain.Ino == exec.Ino {
				t.Errorf("plain and executable copies of BLOB_A share inode %d", plain.Ino)
			}
			checkAttr(t, rootA, plain, 0o444, 2, 1)
			checkAttr(t, rootExecA, exec, 0o555, 2, 1)
			if b := mustRead(t, e.c, rootExecA); !bytes.Equal(b, storetest.BlobA) {
				t.Errorf("read %s = %x", rootExecA, b)
			}
		}},
	{name: "19-root-name-exact", run: func(t *testing.T, e *env) {
		if _, err := e.c.Stat(rootA); err != nil {
			t.Errorf("stat %s: %v", rootA, err)
		}
		for _, name := range []string{
			"00000000000000000000000000000000-tesT",
			"00000000000000000000000000000000-test2",
			"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-test",
			"00000000000000000000000000000000",
			"00000000000000000000000000000000-",
			"0000000000000000000000000000000-test",
			"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-test", // e is not nixbase32
			"77777777777777777777777777777777-test", // valid, unknown
		} {
			_, err := e.c.Stat(name)
			wantErr(t, "stat "+name, err, syscall.ENOENT)
		}
	}},
	{name: "20-writes-refused", run: func(t *testing.T, e *env) {
		c := e.c
		wantErr(t, "create at root", c.Create("newfile"), syscall.EROFS)
		wantErr(t, "create in dir", c.Create(rootComplex+"/newfile"), syscall.EROFS)
		wantErr(t, "mkdir", c.Mkdir(rootComplex+"/newdir"), syscall.EROFS)
		wantErr(t, "mkdir at root", c.Mkdir("newdir"), syscall.EROFS)
		wantErr(t, "rename", c.Rename(rootComplex+"/.keep", rootComplex+"/moved"), syscall.EROFS)
		wantErr(t, "unlink", c.Remove(rootComplex+"/.keep"), syscall.EROFS)
		wantErr(t, "unlink root entry", c.Remove(rootA), syscall.EROFS)
		wantErr(t, "chmod", c.Chmod(rootA, 0o777), syscall.EROFS)
		wantErr(t, "truncate", c.Truncate(rootA, 0), syscall.EROFS)
		wantErr(t, "write", c.WriteAt(rootA, []byte{9}, 0), syscall.EROFS)
		for _, p := range []string{"newfile", rootComplex + "/newfile", rootComplex + "/newdir", rootComplex + "/moved"} {
			_, err := c.Lstat(p)
			wantErr(t, "after writes, stat "+p, err, syscall.ENOENT)
		}
		if b := mustRead(t, c, rootA); !bytes.Equal(b, storetest.BlobA) {
			t.Errorf("after writes, %s = %x", rootA, b)
		}
		checkAttr(t, rootA, mustStat(t, c, rootA, true), 0o444, 2, 1)
		want := []DirEntry{{".keep", 0}, {"aa", fs.ModeSymlink}, {"keep", fs.ModeDir}}
		if got := names(t, c, rootComplex, 0); !slices.Equal(got, want) {
			t.Errorf("after writes, list %s = %v", rootComplex, got)
		}
	}},
	{name: "21-missing-directory",
		store: func(t *testing.T) storeclient.Store {
			return Missing(fixtureStore(t, storetest.FillOptions{}), digestKeep)
		},
		run: func(t *testing.T, e *env) {
			checkAttr(t, rootKeep, mustStat(t, e.c, rootKeep, true), fs.ModeDir|0o555, 2, 2)
			_, err := e.c.ReadDir(rootKeep, 0)
			wantErr(t, "list missing directory", err, syscall.EIO)
			_, err = e.c.Stat(rootKeep + "/.keep")
			wantErr(t, "lookup in missing directory", err, syscall.EIO)
		}},
	{name: "22-missing-blob",
		store: func(t *testing.T) storeclient.Store {
			return fixtureStore(t, storetest.FillOptions{SkipBlobs: map[storeclient.Digest]bool{digestA: true}})
		},
		run: func(t *testing.T, e *env) {
			checkAttr(t, rootA, mustStat(t, e.c, rootA, true), 0o444, 2, 1)
			_, err := e.c.ReadFile(rootA)
			wantErr(t, "read missing blob", err, syscall.EIO)
		}},
	{name: "23-corrupt-data",
		store: func(t *testing.T) storeclient.Store {
			return Corrupt(fixtureStore(t, storetest.FillOptions{}), digestA, digestB, fixtures.DirectoryComplicated.Digest())
		},
		run: func(t *testing.T, e *env) {
			for _, p := range []string{rootA, rootB} {
				b, err := e.c.ReadFile(p)
				wantErr(t, "read corrupt blob "+p, err, syscall.EIO)
				if len(b) > 0 {
					t.Errorf("read corrupt blob %s served %d bytes", p, len(b))
				}
				p1 := make([]byte, 1)
				n, err := e.c.ReadAt(p, p1, 1)
				wantErr(t, "ReadAt corrupt blob "+p, err, syscall.EIO)
				if n > 0 {
					t.Errorf("ReadAt corrupt blob %s served a byte", p)
				}
			}
			_, err := e.c.ReadDir(rootComplex, 0)
			wantErr(t, "list corrupt directory", err, syscall.EIO)
			// Intact data from the same verifying backend is served.
			if b := mustRead(t, e.c, rootExec); !bytes.Equal(b, storetest.HelloWorld) {
				t.Errorf("read intact blob = %q", b)
			}
			if got := names(t, e.c, rootKeep, 0); len(got) != 1 {
				t.Errorf("list intact directory = %v", got)
			}
		}},
	{name: "24-xattrs", run: func(t *testing.T, e *env) {
		for _, x := range []struct{ path, name, want string }{
			{rootKeep, vfs.XattrDirectoryDigest, "blake3-i1tdZCtka7jtUEsIYsOUE+h+V0kUl9570HWVP3uDgQ4="},
			{rootA, vfs.XattrBlobDigest, "blake3-e3AVu5LPCzGAN3AqbN2B3uQSJPc0aEwsEizWNZyx7mM="},
			{rootComplex, vfs.XattrDirectoryDigest, "blake3-Qkp/bOCNgF0VtCgGL6rpYpmhZ11wjDo5Jhr+OM3QT+s="},
		} {
			got, err := e.c.Getxattr(x.path, x.name)
			if err != nil || string(got) != x.want {
				t.Errorf("getxattr %s %s = %q, %v; want %q", x.path, x.name, got, err, x.want)
			}
		}
		_, err := e.c.Getxattr(rootKeep, vfs.XattrBlobDigest)
		wantErr(t, "getxattr wrong name on a directory", err, syscall.ENODATA)
		_, err = e.c.Getxattr(rootA, "user.other")
		wantErr(t, "getxattr unknown name", err, syscall.ENODATA)
		_, err = e.c.Getxattr("", vfs.XattrDirectoryDigest)
		wantErr(t, "getxattr on the root", err, syscall.ENODATA)
	}},
	{name: "25-restart-identity", run: func(t *testing.T, e *env) {
		paths := []string{"", rootA, rootKeep, rootComplex + "/keep", rootComplex + "/.keep", rootComplex + "/aa", rootLinkA}
		before := make([]Stat, len(paths))
		for i, p := range paths {
			before[i] = mustStat(t, e.c, p, false)
		}
		hc, ok := e.c.(HandleClient)
		var handles [][]byte
		if ok {
			for _, p := range paths {
				h, err := hc.Handle(p)
				if err != nil {
					t.Fatalf("handle %q: %v", p, err)
				}
				handles = append(handles, h)
			}
		}
		c2 := e.serve(t) // a second daemon over the same store
		for i, p := range paths {
			if st := mustStat(t, c2, p, false); st.Ino != before[i].Ino {
				t.Errorf("inode of %q: %d before restart, %d after", p, before[i].Ino, st.Ino)
			}
		}
		if hc2, ok2 := c2.(HandleClient); ok && ok2 {
			for i, h := range handles {
				st, err := hc2.StatHandle(h)
				if err != nil {
					t.Errorf("handle of %q after restart: %v", paths[i], err)
					continue
				}
				if st.Ino != before[i].Ino || st.Mode != before[i].Mode || st.Size != before[i].Size {
					t.Errorf("handle of %q after restart resolves to %+v, want %+v", paths[i], st, before[i])
				}
			}
		}
	}},
	{name: "26-hostile-input", run: func(t *testing.T, e *env) {
		c := e.c
		long := strings.Repeat("a", 300)
		for _, p := range []string{long, rootComplex + "/" + long, rootA[:33] + strings.Repeat("x", 250)} {
			_, err := c.Stat(p)
			wantErr(t, "stat overlong name", err, syscall.ENOENT, syscall.ENAMETOOLONG)
		}
		for _, p := range []string{rootComplex + "/.k\x00eep", "0000\x00-test"} {
			_, err := c.Stat(p)
			wantErr(t, fmt.Sprintf("stat %q", p), err, syscall.ENOENT, syscall.ENAMETOOLONG, syscall.EINVAL)
		}
		// ".." stays inside the tree and means the parent.
		if b := mustRead(t, c, rootComplex+"/keep/../../"+rootA); !bytes.Equal(b, storetest.BlobA) {
			t.Errorf("read through .. = %x", b)
		}
		_, err := c.Stat(rootKeep + "/.keep/..")
		wantErr(t, "stat file/..", err, syscall.ENOTDIR, syscall.ENOENT)
		for _, off := range []int64{2, 3, 1 << 40, 1<<63 - 1} {
			p := make([]byte, 16)
			n, err := c.ReadAt(rootA, p, off)
			if n != 0 || (err != nil && !errors.Is(err, io.EOF)) {
				t.Errorf("ReadAt past the end (%d): %d bytes, %v; want 0 bytes", off, n, err)
			}
		}
		if n, err := c.ReadAt(rootB, nil, 5); n != 0 || (err != nil && !errors.Is(err, io.EOF)) {
			t.Errorf("0-byte read: %d, %v", n, err)
		}
		big := make([]byte, 16<<20)
		n, err := c.ReadAt(rootB, big, 0)
		if (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(big[:n], storetest.BlobB) {
			t.Errorf("16 MiB read of BLOB_B: %d bytes, %v", n, err)
		}
		if hc, ok := c.(HandleClient); ok {
			for _, h := range [][]byte{nil, {0}, {0xff, 1, 2}, bytes.Repeat([]byte{3}, 41), bytes.Repeat([]byte{4}, 64), {2, 1, 2, 3}} {
				_, err := hc.StatHandle(h)
				if err == nil {
					t.Errorf("garbage handle %x resolved", h)
				} else if en, ok := errnoOf(err); ok && en != syscall.ESTALE && en != syscall.EINVAL && en != syscall.EBADF {
					t.Errorf("garbage handle %x: %v, want ESTALE", h, err)
				}
			}
		}
		if gs, ok := c.(GarbageSender); ok {
			if err := gs.SendGarbage(); err != nil {
				t.Errorf("send garbage: %v", err)
			}
		}
		if b := mustRead(t, c, rootA); !bytes.Equal(b, storetest.BlobA) {
			t.Errorf("after hostile input, %s = %x", rootA, b)
		}
	}},
	{name: "27-lying-child-size",
		store: func(t *testing.T) storeclient.Store {
			s := fixtureStore(t, storetest.FillOptions{})
			lying, err := storeclient.NewDirectory(storeclient.Entry{Name: "keep", Node: storeclient.DirectoryNode(digestKeep, 99)})
			if err != nil {
				t.Fatal(err)
			}
			putRoot(t, s, rootLyingDir, storeclient.DirectoryNode(lying.Digest(), lying.Size()))
			putRoot(t, s, rootLyingTop, storeclient.DirectoryNode(digestKeep, 5))
			return Untrusted(WithDirectories(s, lying))
		},
		run: func(t *testing.T, e *env) {
			if got := names(t, e.c, rootLyingDir, 0); len(got) != 1 || got[0].Name != "keep" {
				t.Errorf("list %s = %v, want keep", rootLyingDir, got)
			}
			_, err := e.c.ReadDir(rootLyingDir+"/keep", 0)
			wantErr(t, "list a directory whose recorded size lies", err, syscall.EIO)
			_, err = e.c.Stat(rootLyingDir + "/keep/.keep")
			wantErr(t, "lookup in a directory whose recorded size lies", err, syscall.EIO)
			_, err = e.c.ReadDir(rootLyingTop, 0)
			wantErr(t, "list a root whose recorded size lies", err, syscall.EIO)
		}},
	{name: "28-backend-error",
		store: func(t *testing.T) storeclient.Store { return Failing(fixtureStore(t, storetest.FillOptions{})) },
		opts:  vfs.Options{ListRoot: true},
		run: func(t *testing.T, e *env) {
			_, err := e.c.Stat(rootA)
			wantErr(t, "stat with a failing backend", err, syscall.EIO)
			_, err = e.c.ReadDir("", 0)
			wantErr(t, "list root with a failing backend", err, syscall.EIO)
			if st, err := e.c.Stat(""); err != nil || !st.Mode.IsDir() {
				t.Errorf("stat root with a failing backend: %v, %v", st.Mode, err)
			}
		}},
	{name: "29-backend-stall",
		store: func(t *testing.T) storeclient.Store { return Stall(fixtureStore(t, storetest.FillOptions{})) },
		opts:  vfs.Options{ListRoot: true, Timeout: 50 * time.Millisecond},
		run: func(t *testing.T, e *env) {
			_, err := e.c.Stat(rootA)
			wantErr(t, "stat with a stalling backend", err, syscall.EIO)
			_, err = e.c.ReadDir("", 0)
			wantErr(t, "list root with a stalling backend", err, syscall.EIO)
		}},
	{name: "30-backend-stalls-mid-read",
		store: func(t *testing.T) storeclient.Store { return StallReads(fixtureStore(t, storetest.FillOptions{})) },
		opts:  vfs.Options{Timeout: 50 * time.Millisecond},
		run: func(t *testing.T, e *env) {
			checkAttr(t, rootB, mustStat(t, e.c, rootB, true), 0o444, int64(len(storetest.BlobB)), 1)
			_, err := e.c.ReadFile(rootB)
			wantErr(t, "read with stalling blob reads", err, syscall.EIO)
		}},
	{name: "31-refusals", run: func(t *testing.T, e *env) {
		_, err := e.c.Readlink(rootA)
		wantErr(t, "readlink of a file", err, syscall.EINVAL)
		_, err = e.c.Readlink(rootKeep)
		wantErr(t, "readlink of a directory", err, syscall.EINVAL)
		_, err = e.c.ReadFile(rootKeep)
		wantErr(t, "read a directory", err, syscall.EISDIR)
		_, err = e.c.ReadDir(rootA, 0)
		wantErr(t, "list a file", err, syscall.ENOTDIR)
		_, err = e.c.Stat(rootA + "/x")
		wantErr(t, "lookup below a file", err, syscall.ENOTDIR)
		_, err = e.c.Stat(rootComplex + "/nothere")
		wantErr(t, "lookup of a missing name", err, syscall.ENOENT)
	}},
}

// manyRoots returns 10 000 distinct root names.
func manyRoots() []string {
	out := make([]string, 10000)
	for i := range out {
		h := sha256.Sum256(fmt.Appendf(nil, "root %d", i))
		out[i] = storeclient.StorePathDigest(h[:20]).String() + "-r" + fmt.Sprint(i%7)
	}
	return out
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

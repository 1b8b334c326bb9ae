package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

// openStore opens a read-write store in a new temporary directory and
// closes it when the test ends.
func openStore(t *testing.T, opts local.Options) (*local.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(t.Context(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestConformance(t *testing.T) {
	storetest.TestStore(t, func(t *testing.T) storeclient.Store {
		s, err := local.Open(t.Context(), filepath.Join(t.TempDir(), "store"), local.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestReopen checks that what one opener wrote, the next one reads.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(ctx, dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := storetest.NewFixtures()
	if err := f.Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for name, n := range f.RootNodes() {
		p, err := storetest.PathInfoFor(name, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.GetPathInfo(ctx, p.StorePath.Digest)
		if err != nil {
			t.Fatalf("after reopening: %v", err)
		}
		if got.Node != n {
			t.Errorf("after reopening, %s has node %v, want %v", name, got.Node, n)
		}
	}
	if _, err := r.GetDirectory(ctx, f.DirectoryComplicated.Digest()); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
	if err := storetest.PutBlob(ctx, r, []byte("x")); err == nil {
		t.Error("a blob write to a read-only store succeeded")
	}
	if _, err := r.PutDirectory(ctx, f.DirectoryA); err == nil {
		t.Error("PutDirectory on a read-only store succeeded")
	}
}

func TestReadOnlyOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "store")
	s, err := local.Open(t.Context(), dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a store that does not exist: %v", err)
	}
	defer s.Close()
	for p, err := range s.ListPathInfos(t.Context()) {
		t.Errorf("new store lists %v, %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "VERSION")); err != nil {
		t.Errorf("new store has no VERSION: %v", err)
	}
}

func TestRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := local.Open(t.Context(), dir, local.Options{})
	if err == nil {
		s.Close()
		t.Fatal("opened a non-empty directory that is not a store")
	}
	if !strings.Contains(err.Error(), "not a storefs store") {
		t.Errorf("error %q does not say the directory is not a store", err)
	}
}

func TestUnknownLayoutVersion(t *testing.T) {
	s, dir := openStore(t, local.Options{})
	s.Close()
	for _, tc := range []struct{ content, want string }{
		{"storefs-local-store 4\n", "layout version 4"},
		{"storefs-local-store 1\n", "older storefs"},
		{"something else\n", "not a storefs store"},
		{"storefs-local-store x\n", "bad layout version"},
	} {
		if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := local.Open(t.Context(), dir, local.Options{})
		if err == nil {
			s.Close()
			t.Fatalf("opened a store whose VERSION is %q", tc.content)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("VERSION %q: error %q does not contain %q", tc.content, err, tc.want)
		}
	}
}

// TestPutPathInfoNeedsContent checks the ordering that keeps a killed
// import consistent: no PathInfo before its root content.
func TestPutPathInfoNeedsContent(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{})
	f := storetest.NewFixtures()
	for name, n := range f.RootNodes() {
		if n.Kind() == storeclient.KindSymlink {
			continue
		}
		p, err := storetest.PathInfoFor(name, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(ctx, p); !errors.Is(err, storeclient.ErrNotFound) {
			t.Errorf("PutPathInfo(%s) without its content = %v, want ErrNotFound", name, err)
		}
	}
	// With the content but a wrong recorded size.
	if err := storetest.PutBlob(ctx, s, storetest.BlobA); err != nil {
		t.Fatal(err)
	}
	p, err := storetest.PathInfoFor(storetest.RootBlobA, storeclient.FileNode(storeclient.HashBytes(storetest.BlobA), 3, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, p); err == nil {
		t.Error("PutPathInfo with a wrong file size succeeded")
	}
	if _, err := s.PutDirectory(ctx, f.DirectoryWithKeep); err != nil {
		t.Fatal(err)
	}
	p, err = storetest.PathInfoFor(storetest.RootWithKeep, storeclient.DirectoryNode(f.DirectoryWithKeep.Digest(), 7))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, p); err == nil {
		t.Error("PutPathInfo with a wrong directory size succeeded")
	}
	for p, err := range s.ListPathInfos(ctx) {
		t.Errorf("a rejected PathInfo is listed: %v, %v", p, err)
	}
}

func TestPutDirectoriesBatch(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{})
	f := storetest.NewFixtures()
	// One batch, leaves first, children only inside the batch.
	batch := []*storeclient.Directory{f.DirectoryA, f.DirectoryB, f.DirectoryC, f.DirectoryD, f.DirectoryWithKeep, f.DirectoryComplicated}
	if err := s.PutDirectories(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for _, d := range batch {
		if _, err := s.GetDirectory(ctx, d.Digest()); err != nil {
			t.Fatal(err)
		}
	}
	// A batch with a missing child stores nothing.
	s2, _ := openStore(t, local.Options{})
	if err := s2.PutDirectories(ctx, []*storeclient.Directory{f.DirectoryWithKeep, f.DirectoryB}); !errors.Is(err, storeclient.ErrNotFound) {
		t.Fatalf("batch with a missing child = %v, want ErrNotFound", err)
	}
	if _, err := s2.GetDirectory(ctx, f.DirectoryWithKeep.Digest()); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("after a failed batch, its first Directory is stored (%v)", err)
	}
	// Roots first is rejected.
	if err := s2.PutDirectories(ctx, []*storeclient.Directory{f.DirectoryB, f.DirectoryA}); err == nil {
		t.Error("batch with the parent before its child succeeded")
	}
}

func TestBlobReaderFile(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{})
	if err := storetest.PutBlob(ctx, s, storetest.HelloWorld); err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenBlob(ctx, storeclient.HashBytes(storetest.HelloWorld))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, ok := r.(interface{ File() *os.File })
	if !ok {
		t.Fatalf("local blob reader %T has no File method", r)
	}
	b := make([]byte, 5)
	if _, err := f.File().ReadAt(b, 6); err != nil || string(b) != "World" {
		t.Errorf("File().ReadAt = %q, %v", b, err)
	}
	if !storeclient.IsTrustedLocal(s) {
		t.Error("IsTrustedLocal = false")
	}
}

// TestNoTempLeft checks that committed, deduplicated and discarded blob
// writers all leave DIR/tmp empty, and that a reopen clears what a killed
// writer left there.
func TestNoTempLeft(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	for range 2 {
		if err := storetest.PutBlob(ctx, s, storetest.BlobB); err != nil {
			t.Fatal(err)
		}
	}
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("dropped"))
	w.Close()
	tmp := filepath.Join(dir, "tmp")
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("tmp holds %d files after commits and a close", len(entries))
	}
	s.Close()
	if err := os.WriteFile(filepath.Join(tmp, "blob-left-by-a-killed-writer"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = local.Open(ctx, dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("tmp holds %d files after a read-write open", len(entries))
	}
}

// TestCorruptDirectory overwrites a Directory's bytes in the database:
// GetDirectory must refuse them and Verify must report them.
func TestCorruptDirectory(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	f := storetest.NewFixtures()
	if err := f.Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	target := f.DirectoryWithKeep.Digest()
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"other directory", f.DirectoryB.Marshal()},
		{"garbage", []byte{0xff, 0xff, 0xff}},
		{"truncated", f.DirectoryWithKeep.Marshal()[:10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o644, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("directories")).Put(target[:], tc.value)
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			s, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.GetDirectory(ctx, target)
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("GetDirectory of a corrupt Directory = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), target.String()) {
				t.Errorf("error %q does not name the digest %s", err, target)
			}
			problems := verify(t, s)
			if !hasProblem(problems, local.ProblemCorrupt, "directory", target.String()) {
				t.Errorf("Verify did not report corrupt directory %s; it reported %v", target, problems)
			}
		})
	}
}

// TestCorruptBlob damages blob files on disk: Verify must report each.
func TestCorruptBlob(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	f := storetest.NewFixtures()
	if err := f.Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	if problems := verify(t, s); len(problems) != 0 {
		t.Fatalf("Verify of a healthy store reports %v", problems)
	}
	s.Close()
	blobFile := func(b []byte) string {
		h := storeclient.HashBytes(b).Hex()
		return filepath.Join(dir, "blobs", h[:2], h)
	}
	// Flip one byte of BLOB_B (same length), truncate HelloWorld, delete
	// BLOB_A, and drop a stray file among the blobs.
	mustChmod(t, blobFile(storetest.BlobB))
	fb, err := os.OpenFile(blobFile(storetest.BlobB), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fb.WriteAt([]byte{0xee}, 500000); err != nil {
		t.Fatal(err)
	}
	fb.Close()
	mustChmod(t, blobFile(storetest.HelloWorld))
	if err := os.Truncate(blobFile(storetest.HelloWorld), 5); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(blobFile(storetest.BlobA)); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "blobs", "00", "stray.txt")
	os.MkdirAll(filepath.Dir(stray), 0o755)
	if err := os.WriteFile(stray, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	s, err = local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	problems := verify(t, s)
	for _, want := range []struct {
		kind   local.ProblemKind
		object string
		id     string
	}{
		{local.ProblemCorrupt, "blob", storeclient.HashBytes(storetest.BlobB).String()},
		{local.ProblemCorrupt, "blob", storeclient.HashBytes(storetest.HelloWorld).String()},
		{local.ProblemMissing, "blob", storeclient.HashBytes(storetest.BlobA).String()},
		{local.ProblemStray, "file", stray},
	} {
		if !hasProblem(problems, want.kind, want.object, want.id) {
			t.Errorf("Verify did not report %s %s %s; it reported %v", want.kind, want.object, want.id, problems)
		}
	}
}

func mustChmod(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// verify runs Verify and returns the problems it reports.
func verify(t *testing.T, s *local.Store) []local.Problem {
	t.Helper()
	var problems []local.Problem
	st, err := s.Verify(context.Background(), func(p local.Problem) { problems = append(problems, p) })
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if st.Problems != int64(len(problems)) {
		t.Errorf("Verify counted %d problems and reported %d", st.Problems, len(problems))
	}
	return problems
}

func hasProblem(problems []local.Problem, kind local.ProblemKind, object, id string) bool {
	for _, p := range problems {
		if p.Kind == kind && p.Object == object && p.ID == id {
			return true
		}
	}
	return false
}

func TestVerifyCounts(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{})
	if err := storetest.NewFixtures().Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Verify(ctx, func(p local.Problem) { t.Errorf("problem in a healthy store: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	wantBytes := int64(len(storetest.HelloWorld) + len(storetest.BlobA) + len(storetest.BlobB))
	if st.Blobs != 4 || st.BlobBytes != wantBytes || st.Directories != 6 || st.PathInfos != 7 {
		t.Errorf("Verify stats = %+v; want 4 blobs, %d bytes, 6 directories, 7 pathinfos", st, wantBytes)
	}
}

// TestListPathInfosPaging lists more PathInfos than one scan page holds,
// while writing to the store from inside the loop.
func TestListPathInfosPaging(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{NoSync: true})
	const n = 1300
	target, err := storeclient.NewSymlinkTarget("/nix/store/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		sp := storeclient.StorePath{Digest: storeclient.StorePathDigest{byte(i), byte(i >> 8), 0x77}, Name: "paging"}
		p, err := storetest.PathInfoFor(sp.Basename(), storeclient.SymlinkNode(target))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[storeclient.StorePathDigest]bool)
	for p, err := range s.ListPathInfos(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.StorePath.Digest] {
			t.Fatalf("%s listed twice", p.StorePath)
		}
		seen[p.StorePath.Digest] = true
		// Writing while listing must not deadlock.
		if err := storetest.PutBlob(ctx, s, []byte(p.StorePath.Basename())); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutDirectory(ctx, storetest.NewFixtures().DirectoryA); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != n {
		t.Errorf("listed %d PathInfos, want %d", len(seen), n)
	}
}

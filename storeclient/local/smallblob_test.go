package local_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

// fileBlob is what a blob reader of the local store offers to callers that
// hand its file to the kernel.
type fileBlob interface {
	File() *os.File
	FileOffset() int64
}

// readBlob reads the whole blob d through OpenBlob.
func readBlob(t *testing.T, s storeclient.BlobService, d storeclient.Digest) []byte {
	t.Helper()
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// packSizes returns the size of every pack file of the store in dir.
func packSizes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]int64)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Size()
	}
	return m
}

// TestPutSmallBlob checks that PutSmallBlob packs a blob (no file of its
// own), readable at once through a pack range, that a second put of it
// appends nothing, that a blob file of its own is kept or, with the wrong
// length, replaced, and that nothing is left in tmp.
func TestPutSmallBlob(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	data := []byte("the contents of a small file")
	d := storeclient.HashBytes(data)
	blobFile := func(d storeclient.Digest) string {
		return filepath.Join(dir, "blobs", d.Hex()[:2], d.Hex())
	}

	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("read back %q, want %q", got, data)
	}
	if _, err := os.Stat(blobFile(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a packed blob has a file of its own (%v)", err)
	}
	r, err := s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	fb, ok := r.(fileBlob)
	if !ok {
		t.Fatalf("blob reader %T has no File and FileOffset", r)
	}
	if fb.FileOffset() == 0 {
		t.Error("a packed blob has FileOffset 0")
	}
	b := make([]byte, len(data))
	if _, err := fb.File().ReadAt(b, fb.FileOffset()); err != nil || !bytes.Equal(b, data) {
		t.Errorf("File().ReadAt(FileOffset()) = %q, %v; want %q", b, err, data)
	}
	r.Close()
	if size, err := s.StatBlob(ctx, d); err != nil || size != int64(len(data)) {
		t.Errorf("StatBlob = %d, %v; want %d", size, err, len(data))
	}

	// Again: nothing is appended.
	before := packSizes(t, dir)
	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	if after := packSizes(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a second put of a packed blob changed the packs from %v to %v", before, after)
	}

	// A blob stored as a file of its own is not packed again.
	loose := []byte("written by a blob writer")
	if err := storetest.PutBlob(ctx, s, loose); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, storeclient.HashBytes(loose), loose); err != nil {
		t.Fatal(err)
	}
	if after := packSizes(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a put of a blob stored as a file changed the packs from %v to %v", before, after)
	}

	// A file of its own of the wrong length (cut short by a power loss)
	// is replaced: readers look at it before the packs.
	short := []byte("a blob whose file was cut short")
	sd := storeclient.HashBytes(short)
	if err := os.WriteFile(blobFile(sd), short[:5], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, sd, short); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, s, sd); !bytes.Equal(got, short) {
		t.Fatalf("after replacing a short copy: read back %q, want %q", got, short)
	}

	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %d files after puts", len(entries))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	st, err := r2.Verify(ctx, func(p local.Problem) { t.Errorf("verify: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 3 {
		t.Errorf("verify counts %d blobs, want 3", st.Blobs)
	}
}

// oddBlobs returns n blobs of sizes that are not multiples of anything.
func oddBlobs(n int) [][]byte {
	var blobs [][]byte
	for i := range n {
		b := make([]byte, (i*7919)%(70<<10)+i%3+1)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		copy(b, fmt.Sprintf("blob %d", i))
		blobs = append(blobs, b)
	}
	return blobs
}

// checkReads reads every blob through ReadAt at odd offsets and lengths,
// including reads that cross or start past its end.
func checkReads(t *testing.T, s storeclient.BlobService, blobs [][]byte) {
	t.Helper()
	for i, want := range blobs {
		d := storeclient.HashBytes(want)
		r, err := s.OpenBlob(t.Context(), d)
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		if r.Size() != int64(len(want)) {
			t.Errorf("blob %d: Size %d, want %d", i, r.Size(), len(want))
		}
		for _, off := range []int64{0, 1, 3, int64(len(want)) / 2, int64(len(want)) - 1, int64(len(want)), int64(len(want)) + 5} {
			for _, n := range []int{1, 7, 4096, len(want) + 10} {
				p := make([]byte, n)
				got, err := r.ReadAt(p, off)
				end := min(int64(len(want)), off+int64(n))
				wantN := max(0, int(end-off))
				if got != wantN || !bytes.Equal(p[:got], want[min(off, int64(len(want))):end]) {
					t.Fatalf("blob %d: ReadAt(%d bytes, %d) = %d bytes, want %d", i, n, off, got, wantN)
				}
				if wantN < n && !errors.Is(err, io.EOF) {
					t.Fatalf("blob %d: short ReadAt(%d bytes, %d) error %v, want io.EOF", i, n, off, err)
				}
				if wantN == n && err != nil && !errors.Is(err, io.EOF) {
					t.Fatalf("blob %d: ReadAt(%d bytes, %d): %v", i, n, off, err)
				}
			}
		}
		r.Close()
	}
}

// TestPackedReads puts blobs of odd sizes from many goroutines (as the
// importer's workers do, with duplicates), and reads them at odd offsets:
// at once, after the writer is closed through a read-only opener, and
// after a reopen for writing, which appends nothing for a repeated put.
func TestPackedReads(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	blobs := oddBlobs(200)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() {
			// Every worker puts every other blob, so most are put by two
			// workers at about the same time.
			for i := w % 2; i < len(blobs); i += 2 {
				if err := s.PutSmallBlob(ctx, storeclient.HashBytes(blobs[i]), blobs[i]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkReads(t, s, blobs)
	var total int64
	for _, b := range blobs {
		total += int64(len(b))
	}
	var packed int64
	for _, size := range packSizes(t, dir) {
		packed += size
	}
	if packed < total || packed > total+4096 {
		t.Errorf("packs hold %d bytes for %d bytes of distinct blobs: a blob was appended twice or lost", packed, total)
	}

	// Another opener sees nothing uncommitted, and everything once the
	// writer is closed.
	ro, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.StatBlob(ctx, storeclient.HashBytes(blobs[0])); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("another opener sees an uncommitted packed blob: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkReads(t, ro, blobs)

	before := packSizes(t, dir)
	s2, err := local.Open(ctx, dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, b := range blobs {
		if err := s2.PutSmallBlob(ctx, storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if after := packSizes(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("re-putting stored blobs after a reopen changed the packs from %v to %v", before, after)
	}
	checkReads(t, s2, blobs)
	fresh := []byte("a new blob after the reopen")
	if err := s2.PutSmallBlob(ctx, storeclient.HashBytes(fresh), fresh); err != nil {
		t.Fatal(err)
	}
	checkReads(t, s2, [][]byte{fresh})
	if got := len(packSizes(t, dir)); got != 1 {
		t.Errorf("%d packs, want the one pack appended to again", got)
	}
}

// TestPackCommittedWithMetadata checks that the packed blobs a Directory
// refers to are visible to another opener once the Directory is.
func TestPackCommittedWithMetadata(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	data := []byte("a file of a directory")
	d := storeclient.HashBytes(data)
	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	name, _ := storeclient.NewName("f")
	dirc, err := storeclient.NewDirectory(storeclient.Entry{Name: name, Node: storeclient.FileNode(d, uint64(len(data)), false)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDirectory(ctx, dirc); err != nil {
		t.Fatal(err)
	}
	ro, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := readBlob(t, ro, d); !bytes.Equal(got, data) {
		t.Errorf("another opener reads %q, want %q", got, data)
	}
	// A PathInfo whose root is a packed file is accepted.
	root := []byte("a root file")
	if err := s.PutSmallBlob(ctx, storeclient.HashBytes(root), root); err != nil {
		t.Fatal(err)
	}
	p, err := storetest.PathInfoFor((storeclient.StorePath{Name: "root-file"}).Basename(), storeclient.FileNode(storeclient.HashBytes(root), uint64(len(root)), false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, ro, storeclient.HashBytes(root)); !bytes.Equal(got, root) {
		t.Errorf("another opener reads %q, want %q", got, root)
	}
}

// TestPackUncommittedTail checks that a writer's open cuts off what a
// killed writer appended without committing, and removes a pack with
// nothing committed in it.
func TestPackUncommittedTail(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	blobs := oddBlobs(20)
	for _, b := range blobs {
		if err := s.PutSmallBlob(ctx, storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	committed := packSizes(t, dir)
	if len(committed) != 1 {
		t.Fatalf("packs %v, want one", committed)
	}
	for name := range committed {
		f, err := os.OpenFile(filepath.Join(dir, "packs", name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("appended by a writer that was killed"))
		f.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, "packs", "000000ff.pack"), []byte("storefs-pack 1\n\x00junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := local.Open(ctx, dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := packSizes(t, dir); fmt.Sprint(got) != fmt.Sprint(committed) {
		t.Errorf("after a writer's open the packs are %v, want %v", got, committed)
	}
	checkReads(t, s, blobs)
	if problems := verify(t, s); len(problems) != 0 {
		t.Errorf("verify: %v", problems)
	}
}

// TestVerifyPacked damages a pack: Verify must name each damaged blob, and
// report a stray file among the packs.
func TestVerifyPacked(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	blobs := oddBlobs(10)
	var offs []int64
	for _, b := range blobs {
		d := storeclient.HashBytes(b)
		if err := s.PutSmallBlob(ctx, d, b); err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenBlob(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, r.(fileBlob).FileOffset())
		r.Close()
	}
	s.Close()
	pack := filepath.Join(dir, "packs", "00000001.pack")
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the middle of blob 3, and cut the last blob short.
	b := []byte{0}
	at := offs[3] + int64(len(blobs[3]))/2
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	f.Close()
	last := len(blobs) - 1
	if err := os.Truncate(pack, offs[last]+int64(len(blobs[last]))-3); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "packs", "notes.txt")
	if err := os.WriteFile(stray, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ro, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	problems := verify(t, ro)
	for _, want := range []struct {
		kind   local.ProblemKind
		object string
		id     string
	}{
		{local.ProblemCorrupt, "blob", storeclient.HashBytes(blobs[3]).String()},
		{local.ProblemCorrupt, "blob", storeclient.HashBytes(blobs[last]).String()},
		{local.ProblemStray, "file", stray},
	} {
		if !hasProblem(problems, want.kind, want.object, want.id) {
			t.Errorf("Verify did not report %s %s %s; it reported %v", want.kind, want.object, want.id, problems)
		}
	}
	if len(problems) != 3 {
		t.Errorf("Verify reported %d problems, want 3: %v", len(problems), problems)
	}
}

// TestLayout2Store checks that a store written before packs (blob files
// only, layout 2) is read as it is, and becomes layout 3 only when its
// writer packs a blob.
func TestLayout2Store(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	f := storetest.NewFixtures()
	if err := f.Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What storefs wrote before packs: no packs directory, no pack
	// buckets, VERSION 2.
	if err := os.Remove(filepath.Join(dir, "packs")); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range []string{"packed", "packs"} {
			if tx.Bucket([]byte(b)) != nil {
				return fmt.Errorf("a store with no packed blob has bucket %q", b)
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	version := filepath.Join(dir, "VERSION")
	if err := os.WriteFile(version, []byte("storefs-local-store 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ro, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open a layout 2 store read-only: %v", err)
	}
	defer ro.Close()
	for _, b := range [][]byte{storetest.HelloWorld, storetest.BlobA, storetest.BlobB} {
		if got := readBlob(t, ro, storeclient.HashBytes(b)); !bytes.Equal(got, b) {
			t.Errorf("layout 2 store reads %d bytes, want %d", len(got), len(b))
		}
	}
	if problems := verify(t, ro); len(problems) != 0 {
		t.Errorf("verify of a layout 2 store: %v", problems)
	}
	if rest, err := ro.WillNeed(ctx, []storeclient.Digest{storeclient.HashBytes(storetest.BlobA)}); err != nil || len(rest) != 1 {
		t.Errorf("WillNeed on a store without packs = %v, %v; want the blob back", rest, err)
	}

	rw, err := local.Open(ctx, dir, local.Options{})
	if err != nil {
		t.Fatalf("open a layout 2 store read-write: %v", err)
	}
	defer rw.Close()
	if b, _ := os.ReadFile(version); string(b) != "storefs-local-store 2\n" {
		t.Errorf("opening for writing changed VERSION to %q before anything was packed", b)
	}
	data := []byte("the first packed blob")
	if err := rw.PutSmallBlob(ctx, storeclient.HashBytes(data), data); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(version); !strings.HasPrefix(string(b), "storefs-local-store 3") {
		t.Errorf("after the first packed blob VERSION is %q, want layout 3", b)
	}
	if got := readBlob(t, rw, storeclient.HashBytes(data)); !bytes.Equal(got, data) {
		t.Errorf("read back %q, want %q", got, data)
	}
	if got := readBlob(t, rw, storeclient.HashBytes(storetest.BlobB)); !bytes.Equal(got, storetest.BlobB) {
		t.Error("a blob file of the layout 2 store reads back wrong after the upgrade")
	}
}

// TestWillNeed checks that WillNeed returns the blobs that are not packed.
func TestWillNeed(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	blobs := oddBlobs(30)
	var ds []storeclient.Digest
	for _, b := range blobs {
		ds = append(ds, storeclient.HashBytes(b))
		if err := s.PutSmallBlob(ctx, storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
	}
	loose := []byte("a blob file")
	if err := storetest.PutBlob(ctx, s, loose); err != nil {
		t.Fatal(err)
	}
	missing := storeclient.HashBytes([]byte("missing"))
	ds = append(ds, storeclient.HashBytes(loose), missing)
	rest, err := s.WillNeed(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0] != storeclient.HashBytes(loose) || rest[1] != missing {
		t.Errorf("WillNeed = %v, want the blob file and the missing blob", rest)
	}
	s.Close()
	ro, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if rest, err := ro.WillNeed(ctx, ds); err != nil || len(rest) != 2 {
		t.Errorf("WillNeed of another opener = %v, %v; want 2 left", rest, err)
	}
}

// TestPutSmallBlobReadOnly checks that a read-only store refuses the put.
func TestPutSmallBlobReadOnly(t *testing.T) {
	ctx := t.Context()
	rwDir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(ctx, rwDir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	r, err := local.Open(ctx, rwDir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("x")
	if err := r.PutSmallBlob(ctx, storeclient.HashBytes(data), data); err == nil {
		t.Fatal("PutSmallBlob on a read-only store succeeded")
	}
}

// BenchmarkPutSmallBlob stores 32 KiB blobs with PutSmallBlob and, for
// comparison, with a blob writer (temporary file, hash, rename).
func BenchmarkPutSmallBlob(b *testing.B) {
	const size = 32 << 10
	blob := func(i int) []byte {
		data := make([]byte, size)
		copy(data, fmt.Sprintf("blob %d", i))
		return data
	}
	b.Run("PutSmallBlob", func(b *testing.B) {
		s, err := local.Open(b.Context(), filepath.Join(b.TempDir(), "store"), local.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			data := blob(i)
			if err := s.PutSmallBlob(b.Context(), storeclient.HashBytes(data), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("BlobWriter", func(b *testing.B) {
		s, err := local.Open(b.Context(), filepath.Join(b.TempDir(), "store"), local.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			w, err := s.NewBlobWriter(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Write(blob(i)); err != nil {
				b.Fatal(err)
			}
			if _, err := w.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

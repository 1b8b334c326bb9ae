package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storepb"
)

// TestStore runs the conformance suite of the storeclient.Store contract
// against a backend. open returns a new, empty store for one subtest; the
// suite closes it. Every backend's tests call it:
//
//	func TestConformance(t *testing.T) {
//		storetest.TestStore(t, func(t *testing.T) storeclient.Store { return memory.New() })
//	}
func TestStore(t *testing.T, open func(t *testing.T) storeclient.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s storeclient.Store)
	}{
		{"BlobRoundTrip", testBlobRoundTrip},
		{"BlobChunkedWrite", testBlobChunkedWrite},
		{"BlobConcurrentReadAt", testBlobConcurrentReadAt},
		{"BlobCloseWithoutCommit", testBlobCloseWithoutCommit},
		{"BlobIdempotent", testBlobIdempotent},
		{"NotFound", testNotFound},
		{"DirectoryRoundTrip", testDirectoryRoundTrip},
		{"DirectoryMissingChild", testDirectoryMissingChild},
		{"DirectoryWrongChildSize", testDirectoryWrongChildSize},
		{"DirectoryIdempotent", testDirectoryIdempotent},
		{"PathInfoRoundTrip", testPathInfoRoundTrip},
		{"PathInfoMetadata", testPathInfoMetadata},
		{"PathInfoReplace", testPathInfoReplace},
		{"PathInfoListStop", testPathInfoListStop},
		{"Concurrency", testConcurrency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.run(t, s)
		})
	}
}

// putBlob writes b and fails the test unless the digest is HashBytes(b).
func putBlob(t *testing.T, s storeclient.BlobService, b []byte) storeclient.Digest {
	t.Helper()
	if err := PutBlob(t.Context(), s, b); err != nil {
		t.Fatalf("put blob of %d bytes: %v", len(b), err)
	}
	return storeclient.HashBytes(b)
}

// readBlob opens a blob and returns its content, checking Size and the
// reads at and past the end.
func readBlob(t *testing.T, s storeclient.BlobService, d storeclient.Digest) []byte {
	t.Helper()
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatalf("OpenBlob(%s): %v", d, err)
	}
	defer r.Close()
	got := make([]byte, r.Size())
	if n, err := r.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(all %d bytes, 0) = %d, %v", len(got), n, err)
	}
	buf := make([]byte, 8)
	for _, off := range []int64{r.Size(), r.Size() + 1, r.Size() + 1<<20} {
		if n, err := r.ReadAt(buf, off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt(%d bytes, %d) of a %d-byte blob = %d, %v; want 0, io.EOF", len(buf), off, r.Size(), n, err)
		}
	}
	return got
}

func testBlobRoundTrip(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", Empty},
		{"one byte", []byte{0x2a}},
		{"BLOB_A", BlobA},
		{"HelloWorld", HelloWorld},
		{"BLOB_B", BlobB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := putBlob(t, s, tc.data)
			size, err := s.StatBlob(ctx, d)
			if err != nil || size != int64(len(tc.data)) {
				t.Fatalf("StatBlob = %d, %v; want %d, nil", size, err, len(tc.data))
			}
			if got := readBlob(t, s, d); !bytes.Equal(got, tc.data) {
				t.Fatalf("blob content differs from what was written (%d bytes read, %d written)", len(got), len(tc.data))
			}
			if len(tc.data) < 2 {
				return
			}
			r, err := s.OpenBlob(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// A read that crosses the end returns the tail and io.EOF.
			mid := int64(len(tc.data) / 2)
			buf := make([]byte, len(tc.data))
			n, err := r.ReadAt(buf, mid)
			if n != len(tc.data)-int(mid) || err != io.EOF {
				t.Errorf("ReadAt(%d bytes, %d) = %d, %v; want %d, io.EOF", len(buf), mid, n, err, len(tc.data)-int(mid))
			}
			if !bytes.Equal(buf[:n], tc.data[mid:]) {
				t.Errorf("ReadAt across the end returned the wrong bytes")
			}
			// A read inside the blob returns exactly what was asked.
			buf = buf[:1]
			if n, err := r.ReadAt(buf, mid); n != 1 || err != nil || buf[0] != tc.data[mid] {
				t.Errorf("ReadAt(1 byte, %d) = %d, %v, %#x; want 1, nil, %#x", mid, n, err, buf[0], tc.data[mid])
			}
		})
	}
}

func testBlobChunkedWrite(t *testing.T, s storeclient.Store) {
	w, err := s.NewBlobWriter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for rest, chunk := BlobB, 1; len(rest) > 0; chunk = chunk*3 + 1 {
		n := min(chunk, len(rest))
		if m, err := w.Write(rest[:n]); m != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		rest = rest[n:]
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if want := storeclient.HashBytes(BlobB); d != want {
		t.Fatalf("Commit = %s, want %s", d, want)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close after Commit: %v", err)
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, BlobB) {
		t.Fatal("blob written in chunks reads back different")
	}
}

func testBlobConcurrentReadAt(t *testing.T, s storeclient.Store) {
	d := putBlob(t, s, BlobB)
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const goroutines = 32
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			buf := make([]byte, 4096+g)
			for i := range 64 {
				off := int64((g*7919 + i*104729) % len(BlobB))
				n, err := r.ReadAt(buf, off)
				want := BlobB[off:min(int(off)+len(buf), len(BlobB))]
				if n != len(want) || (err != nil && !(err == io.EOF && n < len(buf))) || !bytes.Equal(buf[:n], want) {
					errs <- fmt.Errorf("goroutine %d: ReadAt(%d bytes, %d) = %d, %v (or wrong bytes); want %d bytes", g, len(buf), off, n, err, len(want))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testBlobCloseWithoutCommit(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	data := []byte("discarded: never committed")
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close without Commit: %v", err)
	}
	if _, err := s.StatBlob(ctx, storeclient.HashBytes(data)); !errors.Is(err, storeclient.ErrNotFound) {
		t.Fatalf("StatBlob of a blob closed without Commit = %v, want ErrNotFound", err)
	}
	if _, err := w.Commit(); err == nil {
		t.Error("Commit after Close succeeded")
	}
}

func testBlobIdempotent(t *testing.T, s storeclient.Store) {
	for range 3 {
		putBlob(t, s, HelloWorld)
		putBlob(t, s, Empty)
	}
	if got := readBlob(t, s, storeclient.HashBytes(HelloWorld)); !bytes.Equal(got, HelloWorld) {
		t.Fatalf("blob put three times reads %q", got)
	}
}

func testNotFound(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	d := storeclient.HashBytes([]byte("not in the store"))
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("StatBlob(missing) = %v, want ErrNotFound", err)
	}
	if r, err := s.OpenBlob(ctx, d); !errors.Is(err, storeclient.ErrNotFound) {
		if r != nil {
			r.Close()
		}
		t.Errorf("OpenBlob(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetDirectory(ctx, d); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("GetDirectory(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetPathInfo(ctx, storeclient.StorePathDigest{1, 2, 3}); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("GetPathInfo(missing) = %v, want ErrNotFound", err)
	}
	for p, err := range s.ListPathInfos(ctx) {
		t.Errorf("ListPathInfos of an empty store yielded %v, %v", p, err)
	}
}

// fixtureDirectories returns the Directory fixtures leaves first.
func fixtureDirectories(f *Fixtures) []*storeclient.Directory {
	return []*storeclient.Directory{f.DirectoryA, f.DirectoryWithKeep, f.DirectoryComplicated, f.DirectoryB, f.DirectoryC, f.DirectoryD}
}

func testDirectoryRoundTrip(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	f := NewFixtures()
	for _, dir := range fixtureDirectories(f) {
		d, err := s.PutDirectory(ctx, dir)
		if err != nil {
			t.Fatalf("PutDirectory(%s): %v", dir.Digest(), err)
		}
		if d != dir.Digest() {
			t.Fatalf("PutDirectory returned %s, want %s", d, dir.Digest())
		}
	}
	if f.DirectoryA.Digest() != storeclient.EmptyDigest {
		t.Fatalf("empty Directory digest %s, want %s", f.DirectoryA.Digest(), storeclient.EmptyDigest)
	}
	for _, dir := range fixtureDirectories(f) {
		got, err := s.GetDirectory(ctx, dir.Digest())
		if err != nil {
			t.Fatalf("GetDirectory(%s): %v", dir.Digest(), err)
		}
		if got.Digest() != dir.Digest() || !bytes.Equal(got.Marshal(), dir.Marshal()) || got.Size() != dir.Size() {
			t.Errorf("GetDirectory(%s) returned a Directory with digest %s, size %d; want size %d", dir.Digest(), got.Digest(), got.Size(), dir.Size())
		}
	}
}

// mustDirectory builds a Directory or fails the test.
func mustDirectory(t *testing.T, entries ...storeclient.Entry) *storeclient.Directory {
	t.Helper()
	d, err := storeclient.NewDirectory(entries...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func testDirectoryMissingChild(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	f := NewFixtures()
	// DirectoryB's child, the empty Directory, is not stored.
	for _, dir := range []*storeclient.Directory{
		f.DirectoryB,
		mustDirectory(t, entry("x", storeclient.DirectoryNode(storeclient.HashBytes([]byte("nowhere")), 0))),
	} {
		if _, err := s.PutDirectory(ctx, dir); err == nil {
			t.Errorf("PutDirectory(%s) with a missing child succeeded", dir.Digest())
		}
		if _, err := s.GetDirectory(ctx, dir.Digest()); !errors.Is(err, storeclient.ErrNotFound) {
			t.Errorf("GetDirectory of a rejected Directory = %v, want ErrNotFound", err)
		}
	}
}

func testDirectoryWrongChildSize(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	f := NewFixtures()
	if _, err := s.PutDirectory(ctx, f.DirectoryWithKeep); err != nil {
		t.Fatal(err)
	}
	for _, size := range []uint64{f.DirectoryWithKeep.Size() + 1, 0, 1 << 63} {
		bad := mustDirectory(t, entry("keep", storeclient.DirectoryNode(f.DirectoryWithKeep.Digest(), size)))
		if _, err := s.PutDirectory(ctx, bad); err == nil {
			t.Errorf("PutDirectory with child size %d (stored child has %d) succeeded", size, f.DirectoryWithKeep.Size())
		}
		if _, err := s.GetDirectory(ctx, bad.Digest()); !errors.Is(err, storeclient.ErrNotFound) {
			t.Errorf("GetDirectory of a rejected Directory = %v, want ErrNotFound", err)
		}
	}
}

func testDirectoryIdempotent(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	f := NewFixtures()
	for range 2 {
		for _, dir := range fixtureDirectories(f) {
			if _, err := s.PutDirectory(ctx, dir); err != nil {
				t.Fatalf("PutDirectory(%s): %v", dir.Digest(), err)
			}
		}
	}
	if got, err := s.GetDirectory(ctx, f.DirectoryD.Digest()); err != nil || got.Digest() != f.DirectoryD.Digest() {
		t.Fatalf("GetDirectory after re-put = %v, %v", got, err)
	}
}

// listAll collects ListPathInfos by store path basename, failing the test
// on an error or a PathInfo yielded twice.
func listAll(t *testing.T, s storeclient.PathInfoService) map[string]*storeclient.PathInfo {
	t.Helper()
	all := make(map[string]*storeclient.PathInfo)
	for p, err := range s.ListPathInfos(t.Context()) {
		if err != nil {
			t.Fatalf("ListPathInfos: %v", err)
		}
		name := p.StorePath.Basename()
		if _, dup := all[name]; dup {
			t.Errorf("ListPathInfos yielded %s twice", name)
		}
		all[name] = p
	}
	return all
}

func testPathInfoRoundTrip(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	f := NewFixtures()
	if err := f.Fill(ctx, s, FillOptions{}); err != nil {
		t.Fatal(err)
	}
	roots := f.RootNodes()
	for name, n := range roots {
		want, err := PathInfoFor(name, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetPathInfo(ctx, want.StorePath.Digest)
		if err != nil {
			t.Fatalf("GetPathInfo(%s): %v", name, err)
		}
		if !bytes.Equal(got.Marshal(), want.Marshal()) {
			t.Errorf("GetPathInfo(%s) = %+v, want %+v", name, got, want)
		}
	}
	// Fill again: re-puts of everything are accepted and change nothing.
	if err := f.Fill(ctx, s, FillOptions{}); err != nil {
		t.Fatalf("second Fill: %v", err)
	}
	all := listAll(t, s)
	if len(all) != len(roots) {
		t.Errorf("ListPathInfos yielded %d PathInfos, want %d", len(all), len(roots))
	}
	for name, n := range roots {
		p, ok := all[name]
		if !ok {
			t.Errorf("ListPathInfos did not yield %s", name)
			continue
		}
		if p.Node != n {
			t.Errorf("ListPathInfos yielded %s with node %v, want %v", name, p.Node, n)
		}
	}
}

func testPathInfoMetadata(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	putBlob(t, s, HelloWorld)
	ref, err := storeclient.ParseStorePathBasename(RootBlobA)
	if err != nil {
		t.Fatal(err)
	}
	drv, err := storeclient.ParseStorePathBasename("7777777777777777777777777777777a-hello")
	if err != nil {
		t.Fatal(err)
	}
	p, err := PathInfoFor(RootHelloExec, storeclient.FileNode(storeclient.HashBytes(HelloWorld), uint64(len(HelloWorld)), true))
	if err != nil {
		t.Fatal(err)
	}
	p.References = []storeclient.StorePath{ref, p.StorePath}
	p.NarSize = 1234
	p.NarSHA256[0], p.NarSHA256[31] = 0xab, 0xcd
	p.Signatures = []storeclient.Signature{{Name: "cache.example-1", Data: bytes.Repeat([]byte{7}, 64)}}
	p.Deriver = &drv
	p.CA = &storeclient.ContentAddress{Type: storepb.NARInfo_CA_FLAT_SHA256, Digest: bytes.Repeat([]byte{9}, 32)}
	if err := s.PutPathInfo(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPathInfo(ctx, p.StorePath.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), p.Marshal()) {
		t.Errorf("GetPathInfo = %+v, want %+v", got, p)
	}
}

func testPathInfoReplace(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	putBlob(t, s, BlobA)
	p, err := PathInfoFor(RootBlobA, storeclient.FileNode(storeclient.HashBytes(BlobA), uint64(len(BlobA)), false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, p); err != nil {
		t.Fatal(err)
	}
	q := *p
	q.NarSize = 42
	if err := s.PutPathInfo(ctx, &q); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPathInfo(ctx, p.StorePath.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got.NarSize != 42 {
		t.Errorf("after replacing, NarSize = %d, want 42", got.NarSize)
	}
	if all := listAll(t, s); len(all) != 1 {
		t.Errorf("after replacing, ListPathInfos yields %d PathInfos, want 1", len(all))
	}
}

func testPathInfoListStop(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	if err := NewFixtures().Fill(ctx, s, FillOptions{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, err := range s.ListPathInfos(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Fatalf("stopped listing after %d PathInfos, want 2", n)
	}
}

// concurrentStorePath returns a distinct valid store path basename for
// goroutine g, item i.
func concurrentStorePath(g, i int) string {
	d := storeclient.StorePathDigest{byte(g), byte(i), byte(i >> 8), 0x5a}
	return storeclient.StorePath{Digest: d, Name: fmt.Sprintf("conc-%d-%d", g, i)}.Basename()
}

func testConcurrency(t *testing.T, s storeclient.Store) {
	ctx := t.Context()
	const goroutines, items = 8, 16
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			errs <- concurrentWorker(ctx, s, g, items)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	all := listAll(t, s)
	if len(all) != goroutines*items {
		t.Errorf("after concurrent puts ListPathInfos yields %d PathInfos, want %d", len(all), goroutines*items)
	}
}

// concurrentWorker puts a shared blob, its own blobs, Directories and
// PathInfos, and reads each back.
func concurrentWorker(ctx context.Context, s storeclient.Store, g, items int) error {
	if err := PutBlob(ctx, s, HelloWorld); err != nil {
		return fmt.Errorf("goroutine %d: shared blob: %w", g, err)
	}
	for i := range items {
		data := fmt.Appendf(nil, "blob of goroutine %d item %d", g, i)
		if err := PutBlob(ctx, s, data); err != nil {
			return fmt.Errorf("goroutine %d: %w", g, err)
		}
		bd := storeclient.HashBytes(data)
		file := storeclient.FileNode(bd, uint64(len(data)), i%2 == 0)
		shared := storeclient.FileNode(storeclient.HashBytes(HelloWorld), uint64(len(HelloWorld)), false)
		leaf, err := storeclient.NewDirectory(entry("data", file), entry("hello", shared))
		if err != nil {
			return err
		}
		root, err := storeclient.NewDirectory(entry("sub", storeclient.DirectoryNode(leaf.Digest(), leaf.Size())), entry("data", file))
		if err != nil {
			return err
		}
		for _, dir := range []*storeclient.Directory{leaf, root} {
			if _, err := s.PutDirectory(ctx, dir); err != nil {
				return fmt.Errorf("goroutine %d: %w", g, err)
			}
		}
		p, err := PathInfoFor(concurrentStorePath(g, i), storeclient.DirectoryNode(root.Digest(), root.Size()))
		if err != nil {
			return err
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			return fmt.Errorf("goroutine %d: %w", g, err)
		}
		got, err := s.GetPathInfo(ctx, p.StorePath.Digest)
		if err != nil {
			return fmt.Errorf("goroutine %d: %w", g, err)
		}
		gotDir, err := s.GetDirectory(ctx, got.Node.Digest())
		if err != nil {
			return fmt.Errorf("goroutine %d: %w", g, err)
		}
		if gotDir.Digest() != root.Digest() {
			return fmt.Errorf("goroutine %d: GetDirectory returned %s, want %s", g, gotDir.Digest(), root.Digest())
		}
		if size, err := s.StatBlob(ctx, bd); err != nil || size != int64(len(data)) {
			return fmt.Errorf("goroutine %d: StatBlob = %d, %v; want %d", g, size, err, len(data))
		}
	}
	// Read a blob another goroutine writes, if it is there yet.
	other := fmt.Appendf(nil, "blob of goroutine %d item %d", (g+1)%8, 0)
	r, err := s.OpenBlob(ctx, storeclient.HashBytes(other))
	switch {
	case errors.Is(err, storeclient.ErrNotFound):
	case err != nil:
		return fmt.Errorf("goroutine %d: %w", g, err)
	default:
		defer r.Close()
		buf := make([]byte, len(other))
		if n, err := r.ReadAt(buf, 0); n != len(buf) || (err != nil && err != io.EOF) || !slices.Equal(buf, other) {
			return fmt.Errorf("goroutine %d: read of another goroutine's blob = %d, %v", g, n, err)
		}
	}
	return nil
}

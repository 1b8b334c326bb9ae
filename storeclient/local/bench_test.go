package local_test

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

const (
	benchBlobSize  = 256 << 20
	benchChunkSize = 1 << 20
)

// benchBlob returns a benchBlobSize blob of non-repeating bytes.
func benchBlob() []byte {
	b := make([]byte, benchBlobSize)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
	return b
}

// BenchmarkBlobReadAt reads a 256 MiB blob in 1 MiB ReadAt calls, the way
// the vfs serves a large file. The blob is in the page cache after it is
// written, so compare with `cat FILE >/dev/null` of a cached file
// (the bench harness does).
func BenchmarkBlobReadAt(b *testing.B) {
	ctx := b.Context()
	s, err := local.Open(ctx, filepath.Join(b.TempDir(), "store"), local.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(benchBlob()); err != nil {
		b.Fatal(err)
	}
	d, err := w.Commit()
	if err != nil {
		b.Fatal(err)
	}
	r, err := s.OpenBlob(ctx, d)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, benchChunkSize)
	b.SetBytes(benchBlobSize)
	for b.Loop() {
		for off := int64(0); off < benchBlobSize; off += benchChunkSize {
			if n, err := r.ReadAt(buf, off); n != len(buf) || (err != nil && err != io.EOF) {
				b.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
			}
		}
	}
}

// BenchmarkBlobWrite writes (and hashes, fsyncs and renames) a 16 MiB blob
// in 64 KiB writes: import throughput for large files.
func BenchmarkBlobWrite(b *testing.B) {
	ctx := b.Context()
	s, err := local.Open(ctx, filepath.Join(b.TempDir(), "store"), local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := benchBlob()[:16<<20]
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		data[0], data[1] = byte(i), byte(i>>8) // a new blob each time, not a dedup
		i++
		w, err := s.NewBlobWriter(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := w.Write(data[off : off+64<<10]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

var _ storeclient.BlobReader = (*local.BlobReader)(nil)

// BenchmarkGetPathInfoReadOnly measures one GetPathInfo of a read-only
// opener: the cost of a reader's database access per operation, including
// opening and closing meta.db when the store does not keep it open.
func BenchmarkGetPathInfoReadOnly(b *testing.B) {
	ctx := b.Context()
	dir := filepath.Join(b.TempDir(), "store")
	w, err := local.Open(ctx, dir, local.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := storetest.PutBlob(ctx, w, []byte("bench")); err != nil {
		b.Fatal(err)
	}
	p, err := storetest.PathInfoFor((storeclient.StorePath{Name: "bench"}).Basename(), storeclient.FileNode(storeclient.HashBytes([]byte("bench")), 5, false))
	if err != nil {
		b.Fatal(err)
	}
	if err := w.PutPathInfo(ctx, p); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	r, err := local.Open(ctx, dir, local.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for b.Loop() {
		if _, err := r.GetPathInfo(ctx, p.StorePath.Digest); err != nil {
			b.Fatal(err)
		}
	}
}

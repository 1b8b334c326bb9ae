package local_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
)

// TestPutSmallBlob checks that PutSmallBlob stores a readable, read-only
// blob, keeps an existing one, replaces a stored copy of the wrong length,
// and leaves nothing in tmp.
func TestPutSmallBlob(t *testing.T) {
	ctx := t.Context()
	s, dir := openStore(t, local.Options{})
	data := []byte("the contents of a small file")
	d := storeclient.HashBytes(data)
	readBack := func() []byte {
		t.Helper()
		r, err := s.OpenBlob(ctx, d)
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
	blobFile := filepath.Join(dir, "blobs", d.Hex()[:2], d.Hex())

	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	if got := readBack(); !bytes.Equal(got, data) {
		t.Fatalf("read back %q, want %q", got, data)
	}
	fi, err := os.Stat(blobFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("blob file mode %v, want read-only 0444", fi.Mode().Perm())
	}

	// Again: the stored blob is kept (same inode).
	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(blobFile)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi, fi2) {
		t.Error("a second put of the same blob replaced the file")
	}

	// A copy of the wrong length (cut short by a power loss) is replaced.
	if err := os.Chmod(blobFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blobFile, data[:5], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	if got := readBack(); !bytes.Equal(got, data) {
		t.Fatalf("after replacing a short copy: read back %q, want %q", got, data)
	}

	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %d files after puts", len(entries))
	}
	st, err := s.Verify(ctx, func(p local.Problem) { t.Errorf("verify: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 1 {
		t.Errorf("verify counts %d blobs, want 1", st.Blobs)
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

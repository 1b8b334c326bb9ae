package local

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

// TestBigBlobWrites writes blobs around the sizes where the writer changes
// paths (the direct-write threshold, chunk and alignment boundaries), in
// writes of awkward sizes, and reads every one back, on a store that
// syncs (direct writes) and on one that does not.
func TestBigBlobWrites(t *testing.T) {
	sizes := []int{
		directThreshold - 1, directThreshold, directThreshold + 1,
		2*bigChunk + directAlign, 3*bigChunk + 7, 5<<20 + 4095, 9 << 20,
	}
	pieces := []int{4097, 65536 + 3, 1 << 20, 3 << 20}
	for _, noSync := range []bool{false, true} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{NoSync: noSync})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		for _, size := range sizes {
			for _, piece := range pieces {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				w, err := s.NewBlobWriter(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				// A small first write leaves the file offset unaligned
				// when the big writer takes over.
				for b, first := data, true; len(b) > 0; first = false {
					n := min(piece, len(b))
					if first {
						n = min(13, len(b))
					}
					if _, err := w.Write(b[:n]); err != nil {
						t.Fatal(err)
					}
					b = b[n:]
				}
				d, err := w.Commit()
				if err != nil {
					t.Fatal(err)
				}
				if want := storeclient.HashBytes(data); d != want {
					t.Fatalf("noSync=%v size %d piece %d: digest %s, want %s", noSync, size, piece, d, want)
				}
				got, err := os.ReadFile(s.blobPath(d))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("noSync=%v size %d piece %d: stored bytes differ (%d bytes, want %d)", noSync, size, piece, len(got), len(data))
				}
			}
		}
	}
}

// TestBigWriterWithoutDirect checks the fall-back for filesystems that
// refuse O_DIRECT: the blob is written through the page cache.
func TestBigWriterWithoutDirect(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.CreateTemp(t.TempDir(), "blob")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5)
	w := newBigWriter(s, f, 0, true)
	w.setDirect = func(*os.File, bool) error { return errDirectRefused }
	if err := w.write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if w.direct {
		t.Error("direct writes still on after the filesystem refused them")
	}
	got, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file holds %d bytes, want the %d written", len(got), len(data))
	}
}

package grpcstore_test

import (
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/storetest"
)

// TestOpenBlobSized reads through OpenBlobSized from servers with and
// without the offset extension and chunk lists: the reads are right, and
// Stat is asked only to seek on a server without offsets, never to
// measure.
func TestOpenBlobSized(t *testing.T) {
	// Larger than the 1 MiB a reader skips by streaming.
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	for _, tc := range []struct {
		name    string
		offsets bool
		chunks  int
		// wantStats is how many Stat calls the reads may make.
		wantStats int
	}{
		{"offsets", true, 0, 0},
		{"offsets and chunks", true, 4, 0},
		{"upstream-like", false, 0, 1},
		{"chunked", false, 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs()
			f.offsets = tc.offsets
			d := f.add(data)
			q := len(data) / max(1, tc.chunks)
			for i := range tc.chunks {
				end := (i + 1) * q
				if i == tc.chunks-1 {
					end = len(data)
				}
				f.chunks[d] = append(f.chunks[d], f.add(data[i*q:end]))
			}
			s := open(t, startFake(t, f), grpcstore.Options{Window: 8192})
			r, err := s.OpenBlobSized(t.Context(), d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// From the start, sequentially: one stream, no Stat.
			buf := make([]byte, 20000)
			for off := 0; off < len(data); off += len(buf) {
				if n, err := r.ReadAt(buf, int64(off)); n != min(len(buf), len(data)-off) || (err != nil && err != io.EOF) {
					t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
				}
			}
			if n, reads := f.statCount(), len(f.readDigests()); n != 0 || reads != 1 {
				t.Errorf("a sequential read made %d Stat and %d Read calls, want 0 and 1", n, reads)
			}
			checkReads(t, r, data)
			if n := f.statCount(); n > tc.wantStats {
				t.Errorf("random reads made %d Stat calls, want at most %d", n, tc.wantStats)
			}
			if tc.chunks > 0 && !tc.offsets {
				// The last bytes are read from the last chunk alone.
				before := len(f.readDigests())
				r2, err := s.OpenBlobSized(t.Context(), d, int64(len(data)))
				if err != nil {
					t.Fatal(err)
				}
				defer r2.Close()
				if _, err := r2.ReadAt(buf[:10], int64(len(data)-10)); err != nil {
					t.Fatal(err)
				}
				if got := f.readDigests()[before:]; len(got) != 1 || got[0] != f.chunks[d][tc.chunks-1] {
					t.Errorf("reading the last bytes read %v, want only the last chunk", got)
				}
			}
		})
	}
}

// TestOpenBlobSizedWrongSize opens blobs with sizes that are not theirs:
// reading fails with ErrCorrupt, however the server streams.
func TestOpenBlobSizedWrongSize(t *testing.T) {
	data := storetest.BlobB
	for _, offsets := range []bool{false, true} {
		for _, delta := range []int64{-1, 1, -100000, 100000} {
			f := newFakeBlobs()
			f.offsets = offsets
			d := f.add(data)
			s := open(t, startFake(t, f), grpcstore.Options{})
			size := int64(len(data)) + delta
			r, err := s.OpenBlobSized(t.Context(), d, size)
			if err != nil {
				t.Fatal(err)
			}
			// Sequentially, and at the end alone.
			_, err = io.Copy(io.Discard, io.NewSectionReader(r, 0, size))
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Errorf("offsets %v, size %+d: reading it all = %v, want ErrCorrupt", offsets, delta, err)
			}
			r.Close()
			r, err = s.OpenBlobSized(t.Context(), d, size)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.ReadAt(make([]byte, 10), size-10)
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Errorf("offsets %v, size %+d: reading the last bytes = %v, want ErrCorrupt", offsets, delta, err)
			}
			r.Close()
		}
	}

	// Sizes that contradict the digest or what the server said.
	f := newFakeBlobs()
	d := f.add(data)
	f.chunks[d] = []storeclient.Digest{d}
	s := open(t, startFake(t, f), grpcstore.Options{})
	if _, err := s.StatBlob(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    storeclient.Digest
		size int64
	}{
		{"size the server contradicts", d, int64(len(data)) - 1},
		{"empty with a digest of bytes", d, 0},
		{"bytes with the empty digest", storeclient.EmptyDigest, 1},
	} {
		if r, err := s.OpenBlobSized(t.Context(), tc.d, tc.size); !errors.Is(err, storeclient.ErrCorrupt) {
			if err == nil {
				r.Close()
			}
			t.Errorf("OpenBlobSized, %s = %v, want ErrCorrupt", tc.name, err)
		}
	}
	r, err := s.OpenBlobSized(t.Context(), storeclient.EmptyDigest, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.ReadAt(make([]byte, 1), 0); n != 0 || err != io.EOF {
		t.Errorf("ReadAt of the empty blob = %d, %v", n, err)
	}
}

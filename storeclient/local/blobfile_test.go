package local

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

func TestBlobFile(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("passthrough bytes")
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	f, off, err := s.BlobFile(ctx, d)
	if err != nil {
		t.Fatalf("BlobFile: %v", err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != string(want) || off != 0 {
		t.Errorf("BlobFile content = %q at %d, %v; want %q at 0", got, off, err, want)
	}

	// A packed blob is a range of its pack.
	packed := []byte("packed bytes")
	pd := storeclient.HashBytes(packed)
	if err := s.PutSmallBlob(ctx, storeclient.HashBytes([]byte("before")), []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, pd, packed); err != nil {
		t.Fatal(err)
	}
	f, off, err = s.BlobFile(ctx, pd)
	if err != nil {
		t.Fatalf("BlobFile of a packed blob: %v", err)
	}
	got = make([]byte, len(packed))
	_, err = f.ReadAt(got, off)
	f.Close()
	if err != nil || string(got) != string(packed) || off == 0 {
		t.Errorf("packed BlobFile content = %q at %d, %v; want %q at a non-zero offset", got, off, err, packed)
	}

	if _, _, err := s.BlobFile(ctx, storeclient.HashBytes([]byte("absent"))); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("BlobFile of a missing blob: %v, want ErrNotFound", err)
	}
	s.Close()
	if _, _, err := s.BlobFile(ctx, d); err == nil {
		t.Error("BlobFile after Close succeeded")
	}
}

// TestPackRollover puts blobs from many goroutines into packs small enough
// that many are started while appends to the one before are under way:
// every blob reads back, before and after a reopen, and verifies clean.
func TestPackRollover(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s.pw.maxSize = 8 << 10
	var blobs [][]byte
	for i := range 300 {
		b := make([]byte, 1+(i*811)%3000)
		copy(b, fmt.Sprintf("rollover blob %d", i))
		blobs = append(blobs, b)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for w := range 6 {
		wg.Go(func() {
			for i := w; i < len(blobs); i += 6 {
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
	check := func(s *Store) {
		t.Helper()
		for i, b := range blobs {
			r, err := s.OpenBlob(ctx, storeclient.HashBytes(b))
			if err != nil {
				t.Fatalf("blob %d: %v", i, err)
			}
			got := make([]byte, len(b))
			if _, err := r.ReadAt(got, 0); (err != nil && err != io.EOF) || string(got) != string(b) {
				t.Fatalf("blob %d reads back wrong (%v)", i, err)
			}
			r.Close()
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	packs, _ := os.ReadDir(filepath.Join(dir, "packs"))
	if len(packs) < 20 {
		t.Errorf("%d packs for 300 blobs of up to 3000 bytes in packs of 8 KiB", len(packs))
	}
	ro, err := Open(ctx, dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	check(ro)
	if _, err := ro.Verify(ctx, func(p Problem) { t.Errorf("verify: %v", p) }); err != nil {
		t.Fatal(err)
	}
}

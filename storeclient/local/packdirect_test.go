package local

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

// directBlobs makes n blobs of odd sizes (1 byte to 70 KiB), so that they
// fill several 1 MiB stages and cross stage ends anywhere.
func directBlobs(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	blobs := make([][]byte, n)
	for i := range blobs {
		b := make([]byte, 1+rng.IntN(70<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		blobs[i] = b
	}
	return blobs
}

func readAll(t *testing.T, s *Store, d storeclient.Digest) []byte {
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

// TestDirectPackAppends puts blobs from several goroutines into a store
// that stages its pack appends and writes them with O_DIRECT, reads each
// back at once (while it may still be staged), after the commit, after
// reopening, and after appending to the reopened store's last pack.
func TestDirectPackAppends(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.pw.direct {
		t.Fatal("a store that syncs does not stage its pack appends")
	}
	blobs := directBlobs(300, 1)
	var wg sync.WaitGroup
	errs := make(chan error, len(blobs))
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(blobs); i += 4 {
				d := storeclient.HashBytes(blobs[i])
				if err := s.PutSmallBlob(t.Context(), d, blobs[i]); err != nil {
					errs <- err
					return
				}
				if got := readAll(t, s, d); !bytes.Equal(got, blobs[i]) {
					errs <- fmt.Errorf("blob %d read right after its put: %d bytes differ from the %d put", i, len(got), len(blobs[i]))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.pw.cur == nil || s.pw.cur.stage == nil {
		t.Fatal("the current pack has no stage: appends were not staged")
	}
	check := func(s *Store, blobs [][]byte, when string) {
		t.Helper()
		for i, b := range blobs {
			if got := readAll(t, s, storeclient.HashBytes(b)); !bytes.Equal(got, b) {
				t.Fatalf("%s: blob %d differs", when, i)
			}
		}
	}
	if err := s.flushPacks(t.Context()); err != nil {
		t.Fatal(err)
	}
	check(s, blobs, "after the commit")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(s, blobs, "after reopening")
	more := directBlobs(100, 2)
	for _, b := range more {
		if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, blobs, "read-only, after appending to the reopened pack")
	check(s, more, "read-only, the blobs appended after reopening")
	if _, err := s.Verify(t.Context(), func(p Problem) { t.Errorf("verify: %v", p) }); err != nil {
		t.Fatal(err)
	}
}

// TestDirectPackRefused checks the fall-back for a filesystem that refuses
// direct writes: the stages are written through the page cache.
func TestDirectPackRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	blobs := directBlobs(120, 3)
	put := func(b []byte) {
		if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
	}
	put(blobs[0])
	s.pw.cur.directRefused.Store(true)
	for _, b := range blobs[1:] {
		put(b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, b := range blobs {
		if got := readAll(t, s, storeclient.HashBytes(b)); !bytes.Equal(got, b) {
			t.Fatalf("blob %d differs", i)
		}
	}
}

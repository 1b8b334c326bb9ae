package local

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// TestVerifyOnOpen flips a byte of a blob file and of a packed blob: with
// VerifyOnOpen their first open fails and quarantines them; without it
// they are served (the default trusts the store). Good blobs are hashed
// once, however many open them at once.
func TestVerifyOnOpen(t *testing.T) {
	ctx := t.Context()
	r := newRotStore(t)
	good := bytes.Repeat([]byte("a good blob "), 100000)
	w, err := Open(ctx, r.dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.PutBlob(ctx, w, good); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.flip(t)

	plain, err := Open(ctx, r.dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, d := range []storeclient.Digest{r.fileD, r.packedD} {
		br, err := plain.OpenBlob(ctx, d)
		if err != nil {
			t.Fatalf("OpenBlob without VerifyOnOpen: %v", err)
		}
		br.Close()
	}

	log := &testLog{}
	s, err := Open(ctx, r.dir, Options{ReadOnly: true, VerifyOnOpen: true, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.OpenBlob(ctx, r.fileD)
	wantQuarantined(t, "first OpenBlob of a corrupt blob file", err)
	_, _, err = s.BlobFile(ctx, r.packedD)
	wantQuarantined(t, "first BlobFile of a corrupt packed blob", err)
	refused(t, s, r.fileD)
	refused(t, s, r.packedD)
	refused(t, plain, r.fileD) // moved out of blobs/
	for _, d := range []storeclient.Digest{r.fileD, r.packedD} {
		if lines := log.lines("level=ERROR", "quarantined", d.String()); len(lines) != 1 {
			t.Errorf("log lines quarantining %s: %q, want one", d, lines)
		}
	}
	h := r.fileD.Hex()
	if _, err := os.Stat(filepath.Join(r.dir, quarantineDir, h)); err != nil {
		t.Errorf("the corrupt blob file is not in the quarantine: %v", err)
	}

	gd := storeclient.HashBytes(good)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			br, err := s.OpenBlob(ctx, gd)
			if err != nil {
				t.Errorf("OpenBlob of a good blob with VerifyOnOpen: %v", err)
				return
			}
			br.Close()
		})
	}
	wg.Wait()
	if !s.verified.Contains(gd) {
		t.Error("a good blob is not remembered as verified after its first open")
	}
	served(t, s, gd, good)
}

// BenchmarkVerifyOnOpen measures what VerifyOnOpen costs an open: the
// first open of a blob of each size (the verified set is emptied before
// every open) and a repeated one, against an open without it. The blob is
// in the page cache: this is the cost of reading and hashing it, not of
// the disk.
func BenchmarkVerifyOnOpen(b *testing.B) {
	ctx := b.Context()
	dir := filepath.Join(b.TempDir(), "store")
	w, err := Open(ctx, dir, Options{NoSync: true, CachedWrites: true})
	if err != nil {
		b.Fatal(err)
	}
	sizes := []int{1 << 20, 64 << 20}
	digests := make(map[int]storeclient.Digest)
	for _, size := range sizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7 / 5)
		}
		if err := storetest.PutBlob(ctx, w, data); err != nil {
			b.Fatal(err)
		}
		digests[size] = storeclient.HashBytes(data)
	}
	w.Close()
	open := func(b *testing.B, s *Store, d storeclient.Digest) {
		r, err := s.OpenBlob(ctx, d)
		if err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	for _, mode := range []string{"off", "first", "again"} {
		s, err := Open(ctx, dir, Options{ReadOnly: true, VerifyOnOpen: mode != "off"})
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range sizes {
			d := digests[size]
			b.Run(fmt.Sprintf("%s/%dMiB", mode, size>>20), func(b *testing.B) {
				open(b, s, d) // in the page cache, and verified for "again"
				if mode == "first" {
					b.SetBytes(int64(size))
				}
				for b.Loop() {
					if mode == "first" {
						s.verified.Purge()
					}
					open(b, s, d)
				}
			})
		}
		s.Close()
	}
}

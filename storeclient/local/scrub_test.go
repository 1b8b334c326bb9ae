package local_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// rotted makes a store with a blob file (the root RootBlobA) and a packed
// blob (RootBlobB), flips one byte of each on disk, and returns the
// store's directory and the two blobs.
func rotted(t *testing.T) (dir string, big, small []byte) {
	t.Helper()
	ctx := t.Context()
	dir = filepath.Join(t.TempDir(), "store")
	s, err := local.Open(ctx, dir, local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big = bytes.Repeat([]byte("a blob file of its own "), 20000)
	small = bytes.Repeat([]byte("a packed blob "), 500)
	for _, c := range []struct {
		name   string
		b      []byte
		packed bool
	}{{storetest.RootBlobA, big, false}, {storetest.RootBlobB, small, true}} {
		d := storeclient.HashBytes(c.b)
		if c.packed {
			err = s.PutSmallBlob(ctx, d, c.b)
		} else {
			err = storetest.PutBlob(ctx, s, c.b)
		}
		if err != nil {
			t.Fatal(err)
		}
		pi, err := storetest.PathInfoFor(c.name, storeclient.FileNode(d, uint64(len(c.b)), false))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(ctx, pi); err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenBlob(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		f, off := r.(fileBlob).File().Name(), r.(fileBlob).FileOffset()
		r.Close()
		if (off != 0) != c.packed {
			t.Fatalf("%s: packed %v, want %v", c.name, off != 0, c.packed)
		}
		flip(t, f, off+int64(len(c.b))/2)
	}
	return dir, big, small
}

// flip flips the byte at off of the file at path.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	mustChmod(t, path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// scrubOnce runs Scrub on s until its first pass ends and returns the
// statistics of that pass.
func scrubOnce(t *testing.T, s *local.Store, rate int64) local.ScrubStats {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	passed := make(chan local.ScrubStats, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Scrub(ctx, local.ScrubOptions{BytesPerSecond: rate, StartDelay: -1, Interval: time.Hour,
			OnPass: func(st local.ScrubStats) { passed <- st }})
	}()
	var st local.ScrubStats
	select {
	case st = <-passed:
	case err := <-done:
		t.Fatalf("Scrub ended before its first pass: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Scrub after its context was cancelled = %v, want context.Canceled", err)
	}
	if s.ScrubStats().Running {
		t.Error("ScrubStats says the scrubber runs after Scrub returned")
	}
	return st
}

// TestScrub flips a byte of a blob file and of a packed blob: a scrub pass
// must find both, count them, log them and quarantine them, so that the
// store and the filesystem over it answer EIO for them (not ENOENT, not
// the wrong bytes), and putting the same content again repairs them.
func TestScrub(t *testing.T) {
	ctx := t.Context()
	dir, big, small := rotted(t)
	logs := &logBuffer{}
	s, err := local.Open(ctx, dir, local.Options{ReadOnly: true, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fsys, err := vfs.New(s, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bigD, smallD := storeclient.HashBytes(big), storeclient.HashBytes(small)

	st := scrubOnce(t, s, 1<<30)
	if st.Passes != 1 || st.Blobs != 2 || st.PassBlobs != 2 || st.Corrupt != 2 || st.Unreadable != 0 ||
		st.Bytes != int64(len(big)+len(small)) || st.LastPassEnded.IsZero() {
		t.Errorf("stats after one pass = %+v; want 1 pass, 2 blobs of %d bytes, 2 corrupt", st, len(big)+len(small))
	}
	if got := s.QuarantineCount(); got != 2 {
		t.Errorf("QuarantineCount = %d, want 2", got)
	}
	for _, d := range []storeclient.Digest{bigD, smallD} {
		if _, err := s.OpenBlob(ctx, d); !errors.Is(err, local.ErrQuarantined) || !errors.Is(err, storeclient.ErrCorrupt) || errors.Is(err, storeclient.ErrNotFound) {
			t.Errorf("OpenBlob of a quarantined blob = %v, want ErrQuarantined and ErrCorrupt, not ErrNotFound", err)
		}
		if _, err := s.StatBlob(ctx, d); !errors.Is(err, local.ErrQuarantined) {
			t.Errorf("StatBlob of a quarantined blob = %v, want ErrQuarantined", err)
		}
		if lines := logs.lines("quarantined", d.String()); len(lines) != 1 {
			t.Errorf("log lines quarantining %s: %q, want one", d, lines)
		}
	}
	for _, name := range []string{storetest.RootBlobA, storetest.RootBlobB} {
		n, err := fsys.Lookup(ctx, fsys.Root(), name)
		if err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		if f, err := fsys.Open(ctx, n); vfs.Errno(err) != syscall.EIO {
			if err == nil {
				f.Close()
			}
			t.Errorf("open %s with a quarantined blob = %v (errno %d), want EIO", name, err, vfs.Errno(err))
		}
	}
	// A second pass does not count or log them again.
	st = scrubOnce(t, s, 1<<30)
	if st.Corrupt != 2 || st.PassBlobs != 0 {
		t.Errorf("stats after a second pass = %+v; want the 2 corrupt blobs skipped", st)
	}

	w, err := local.Open(ctx, dir, local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.PutBlob(ctx, w, big); err != nil {
		t.Fatal(err)
	}
	if err := w.PutSmallBlob(ctx, smallD, small); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{storetest.RootBlobA: big, storetest.RootBlobB: small} {
		n, err := fsys.Lookup(ctx, fsys.Root(), name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := fsys.Open(ctx, n)
		if err != nil {
			t.Fatalf("open %s after the repair: %v", name, err)
		}
		got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the repair reads %d bytes (%v), which are not the blob", name, len(got), err)
		}
	}
	if st := scrubOnce(t, s, 1<<30); st.Corrupt != 2 || st.PassBlobs != 2 {
		t.Errorf("stats of a pass after the repair = %+v; want 2 good blobs hashed, no more corrupt", st)
	}
	if got := s.QuarantineCount(); got != 0 {
		t.Errorf("QuarantineCount after the repair = %d, want 0", got)
	}
}

// TestScrubRate checks loosely that Scrub keeps to its rate: a pass over
// N bytes at R bytes a second cannot take much less than N/R.
func TestScrubRate(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, local.Options{NoSync: true})
	var total int64
	for i := range 4 {
		b := bytes.Repeat([]byte{byte(i)}, 200<<10)
		if err := storetest.PutBlob(ctx, s, b); err != nil {
			t.Fatal(err)
		}
		total += int64(len(b))
	}
	const rate = 2 << 20
	start := time.Now()
	st := scrubOnce(t, s, rate)
	took := time.Since(start)
	if st.PassBytes != total {
		t.Fatalf("the pass hashed %d bytes, want %d", st.PassBytes, total)
	}
	// The limiter starts empty and keeps at most one 64 KiB read of
	// credit; half of the least time leaves room for any clock.
	least := time.Duration(float64(total-64<<10) / rate * float64(time.Second))
	t.Logf("%d bytes at %d B/s took %s (at least %s)", total, rate, took, least)
	if took < least/2 {
		t.Errorf("a pass over %d bytes at %d B/s took %s, want at least %s", total, rate, took, least/2)
	}
}

// TestScrubStops checks that Scrub returns at once when its context ends
// while it waits to start, and that only one Scrub runs at a time.
func TestScrubStops(t *testing.T) {
	s, _ := openStore(t, local.Options{NoSync: true})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Scrub(ctx, local.ScrubOptions{}) }() // waits DefaultScrubStartDelay
	for !s.ScrubStats().Running {
		time.Sleep(time.Millisecond)
	}
	if err := s.Scrub(t.Context(), local.ScrubOptions{StartDelay: -1}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("a second Scrub on the same store = %v, want an error saying one runs", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Scrub = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scrub did not return after its context was cancelled")
	}
}

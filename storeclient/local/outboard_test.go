package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

// putWithWriter writes data through a blob writer in 64 KiB writes.
func putWithWriter(t *testing.T, s *Store, data []byte) storeclient.Digest {
	t.Helper()
	w, err := s.NewBlobWriter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for off := 0; off < len(data); off += 64 << 10 {
		if _, err := w.Write(data[off:min(off+64<<10, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// wantOutboard checks that BlobOutboard of d returns an outboard that
// storeclient.ParseOutboard accepts and that verifies every group of
// data, and rejects a changed byte.
func wantOutboard(t *testing.T, s *Store, d storeclient.Digest, data []byte) {
	t.Helper()
	enc, err := s.BlobOutboard(t.Context(), d)
	if err != nil {
		t.Fatalf("BlobOutboard: %v", err)
	}
	o, err := storeclient.ParseOutboard(d, int64(len(data)), enc)
	if err != nil {
		t.Fatalf("ParseOutboard: %v", err)
	}
	for off := int64(0); off < int64(len(data)); off += storeclient.BaoGroupSize {
		start, end := o.GroupSpan(off, 1)
		if err := o.Verify(data[start:end], start); err != nil {
			t.Fatalf("Verify at %d: %v", start, err)
		}
	}
	if len(data) > 0 {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		start, end := o.GroupSpan(int64(len(bad)/2), 1)
		if err := o.Verify(bad[start:end], start); !errors.Is(err, storeclient.ErrCorrupt) {
			t.Errorf("Verify of a changed group: %v, want ErrCorrupt", err)
		}
	}
}

func outboardKept(t *testing.T, s *Store, d storeclient.Digest) bool {
	t.Helper()
	_, err := os.Stat(s.outboardPath(d))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestOutboardKeptAtImport: a blob of more than 1 MiB gets its outboard
// kept when it is written, smaller and packed blobs do not, and
// BlobOutboard serves the right outboard for all of them.
func TestOutboardKeptAtImport(t *testing.T) {
	for _, opts := range []Options{{NoSync: true}, {}} {
		t.Run(fmt.Sprintf("NoSync=%v", opts.NoSync), func(t *testing.T) {
			s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			big := outboardData(3<<20+12345, 1)
			atThreshold := outboardData(outboardThreshold, 2)
			small := outboardData(200<<10, 4)
			bigD := putWithWriter(t, s, big)
			atD := putWithWriter(t, s, atThreshold)
			smallD := storeclient.HashBytes(small)
			if err := s.PutSmallBlob(t.Context(), smallD, small); err != nil {
				t.Fatal(err)
			}
			if !outboardKept(t, s, bigD) {
				t.Error("no outboard kept for a 3 MiB blob")
			}
			want, _, _ := storeclient.EncodeOutboard(bytes.NewReader(big), int64(len(big)))
			if got, err := os.ReadFile(s.outboardPath(bigD)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("kept outboard differs from EncodeOutboard's (%v)", err)
			}
			for name, d := range map[string]storeclient.Digest{"1 MiB": atD, "packed": smallD} {
				if outboardKept(t, s, d) {
					t.Errorf("outboard kept for the %s blob", name)
				}
			}
			wantOutboard(t, s, bigD, big)
			wantOutboard(t, s, atD, atThreshold)
			wantOutboard(t, s, smallD, small)
			if outboardKept(t, s, atD) || outboardKept(t, s, smallD) {
				t.Error("BlobOutboard kept the outboard of a blob of at most 1 MiB")
			}
			if entries, err := os.ReadDir(filepath.Join(s.dir, tmpDir)); err != nil || len(entries) != 0 {
				t.Errorf("DIR/tmp holds %d files after the writes (%v)", len(entries), err)
			}

			_, err = s.BlobOutboard(t.Context(), storeclient.HashBytes([]byte("absent")))
			if !errors.Is(err, storeclient.ErrNotFound) {
				t.Errorf("BlobOutboard of a missing blob: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestOutboardDamaged: a kept outboard that is damaged, cut short or
// missing is never served: BlobOutboard computes the right one and writes
// it again.
func TestOutboardDamaged(t *testing.T) {
	log := &testLog{}
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{NoSync: true, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := outboardData(5<<20+3, 5)
	d := putWithWriter(t, s, data)
	good, err := os.ReadFile(s.outboardPath(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		damage func(path string)
	}{
		{"flipped byte", func(path string) { flipByte(t, path, int64(len(good))-5) }},
		{"cut short", func(path string) { mustWrite(t, path, good[:len(good)/2]) }},
		{"zeroed end", func(path string) {
			mustWrite(t, path, append(bytes.Clone(good[:len(good)-4096]), make([]byte, 4096)...))
		}},
		{"another blob's", func(path string) {
			other, _, _ := storeclient.EncodeOutboard(bytes.NewReader(outboardData(len(data), 6)), int64(len(data)))
			mustWrite(t, path, other)
		}},
		{"missing", func(path string) { os.Remove(path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.damage(s.outboardPath(d))
			wantOutboard(t, s, d, data)
			if got, err := os.ReadFile(s.outboardPath(d)); err != nil || !bytes.Equal(got, good) {
				t.Errorf("outboard not written again (%v)", err)
			}
		})
	}
	if n := len(log.lines("kept outboard of a blob is damaged", d.String())); n != 4 {
		t.Errorf("%d log lines about a damaged outboard, want 4:\n%s", n, log.lines())
	}
}

// mustWrite replaces the (read-only) file at path with b.
func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	os.Remove(path)
	if err := os.WriteFile(path, b, 0o444); err != nil {
		t.Fatal(err)
	}
}

// TestOutboardConcurrent calls BlobOutboard from many goroutines at once,
// with the kept outboard present, missing and damaged (run with -race).
func TestOutboardConcurrent(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	blobs := [][]byte{outboardData(2<<20+1, 7), outboardData(3<<20, 8), outboardData(100<<10, 9)}
	var ds []storeclient.Digest
	var want [][]byte
	for _, b := range blobs {
		ds = append(ds, putWithWriter(t, s, b))
		enc, _, _ := storeclient.EncodeOutboard(bytes.NewReader(b), int64(len(b)))
		want = append(want, enc)
	}
	for round, damage := range []func(){
		func() {},
		func() { os.Remove(s.outboardPath(ds[0])); os.Remove(s.outboardPath(ds[1])) },
		func() { flipByte(t, s.outboardPath(ds[1]), 100) },
	} {
		damage()
		var wg sync.WaitGroup
		errs := make(chan error, 48)
		for i := range 48 {
			wg.Go(func() {
				k := i % len(ds)
				enc, err := s.BlobOutboard(t.Context(), ds[k])
				if err == nil && !bytes.Equal(enc, want[k]) {
					err = fmt.Errorf("blob %d: wrong outboard", k)
				}
				if err == nil {
					enc[0] ^= 1 // a caller may change what it got
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
}

// TestOutboardQuarantined: the outboard of a quarantined blob is removed
// and refused as the blob is; putting the blob again keeps it again.
func TestOutboardQuarantined(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(ctx, dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data := outboardData(2<<20, 10)
	d := putWithWriter(t, s, data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	flipByte(t, r.blobPath(d), 12345)
	if c, err := r.checkCopy(d, blobPlace{}, make([]byte, 4096), nil); err != nil || c.fault == "" {
		t.Fatalf("checkCopy = %+v, %v; want a fault", c, err)
	}
	if outboardKept(t, r, d) {
		t.Error("outboard of a quarantined blob kept")
	}
	_, err = r.BlobOutboard(ctx, d)
	wantQuarantined(t, "BlobOutboard", err)

	w, err := Open(ctx, dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	putWithWriter(t, w, data)
	if !outboardKept(t, w, d) {
		t.Error("no outboard kept after the blob was put again")
	}
	wantOutboard(t, r, d, data)
}

// TestOutboardCorruptBlobFound: computing the outboard of a blob whose
// bytes rotted quarantines the blob and fails, rather than serving an
// outboard of other bytes.
func TestOutboardCorruptBlobFound(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	small := outboardData(300<<10, 11) // computed on demand
	d := putWithWriter(t, s, small)
	flipByte(t, s.blobPath(d), 100)
	_, err = s.BlobOutboard(ctx, d)
	if !errors.Is(err, storeclient.ErrCorrupt) {
		t.Fatalf("BlobOutboard of a rotted blob: %v, want ErrCorrupt", err)
	}
	_, err = s.OpenBlob(ctx, d)
	wantQuarantined(t, "OpenBlob after BlobOutboard found it rotted", err)
}

// TestOutboardVerifyAndScrub damages, removes and orphans kept outboards
// and checks that Verify and the scrubber put everything right, count it
// and report no problem, while a stray file is reported.
func TestOutboardVerifyAndScrub(t *testing.T) {
	for _, by := range []string{"verify", "scrub"} {
		t.Run(by, func(t *testing.T) {
			ctx := t.Context()
			log := &testLog{}
			s, err := Open(ctx, filepath.Join(t.TempDir(), "store"), Options{NoSync: true, Logger: log.logger()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			damaged, missing := outboardData(2<<20+5, 12), outboardData(3<<20, 13)
			packed := outboardData(1<<20+10, 14) // a packed blob over the threshold
			damagedD, missingD := putWithWriter(t, s, damaged), putWithWriter(t, s, missing)
			packedD := storeclient.HashBytes(packed)
			if err := s.PutSmallBlob(ctx, packedD, packed); err != nil {
				t.Fatal(err)
			}
			if err := s.PutDirectories(ctx, nil); err != nil { // commits the packed blob
				t.Fatal(err)
			}
			good, err := os.ReadFile(s.outboardPath(damagedD))
			if err != nil {
				t.Fatal(err)
			}
			flipByte(t, s.outboardPath(damagedD), int64(len(good)/2))
			os.Remove(s.outboardPath(missingD))
			orphan := storeclient.HashBytes([]byte("a blob the store does not have"))
			if err := s.putOutboardFile(orphan, good); err != nil {
				t.Fatal(err)
			}

			var written, repaired, removed int64
			if by == "verify" {
				var problems []Problem
				st, err := s.Verify(ctx, func(p Problem) { problems = append(problems, p) })
				if err != nil {
					t.Fatal(err)
				}
				if len(problems) != 0 {
					t.Errorf("Verify reported %v", problems)
				}
				written, repaired, removed = st.OutboardsWritten, st.OutboardsRepaired, st.OutboardsRemoved
			} else {
				st := scrubPassNow(t, s)
				written, repaired, removed = st.OutboardsWritten, st.OutboardsRepaired, st.OutboardsRemoved
			}
			// The packed blob's outboard was missing too.
			if written != 2 || repaired != 1 || removed != 1 {
				t.Errorf("outboards written %d, repaired %d, removed %d; want 2, 1, 1", written, repaired, removed)
			}
			for _, c := range []struct {
				d    storeclient.Digest
				data []byte
			}{{damagedD, damaged}, {missingD, missing}, {packedD, packed}} {
				want, _, _ := storeclient.EncodeOutboard(bytes.NewReader(c.data), int64(len(c.data)))
				if got, err := os.ReadFile(s.outboardPath(c.d)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("outboard of %s not right after %s (%v)", c.d, by, err)
				}
			}
			if outboardKept(t, s, orphan) {
				t.Error("orphaned outboard not removed")
			}
			if n := len(log.lines("did not match its blob", damagedD.String())); n != 1 {
				t.Errorf("%d log lines about the repaired outboard, want 1", n)
			}
		})
	}
	t.Run("stray", func(t *testing.T) {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		putWithWriter(t, s, outboardData(2<<20, 15))
		stray := filepath.Join(s.dir, outboardsDir, "zz")
		if err := os.WriteFile(stray, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var problems []Problem
		if _, err := s.Verify(t.Context(), func(p Problem) { problems = append(problems, p) }); err != nil {
			t.Fatal(err)
		}
		if len(problems) != 1 || problems[0].Kind != ProblemStray || problems[0].ID != stray {
			t.Errorf("problems %v, want the stray file %s", problems, stray)
		}
	})
}

// scrubPassNow runs one scrubber pass, unpaced, and returns the stats.
func scrubPassNow(t *testing.T, s *Store) ScrubStats {
	t.Helper()
	lim := newRateLimiter(1<<40, 1<<30)
	if err := s.scrubPass(t.Context(), lim, make([]byte, scrubBufferSize)); err != nil {
		t.Fatal(err)
	}
	return s.ScrubStats()
}

// TestOutboardReadOnlyDir: where the store's directory cannot be written,
// outboards are computed and served, and the failure to keep them is
// logged once as a warning.
func TestOutboardReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes to read-only directories")
	}
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(ctx, dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data := [][]byte{outboardData(2<<20, 16), outboardData(2<<20, 17)}
	var ds []storeclient.Digest
	for _, b := range data {
		d := putWithWriter(t, s, b)
		os.Remove(s.outboardPath(d))
		ds = append(ds, d)
	}
	s.Close()
	for _, sub := range []string{tmpDir, outboardsDir} {
		if err := os.Chmod(filepath.Join(dir, sub), 0o555); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(filepath.Join(dir, sub), 0o755)
	}
	log := &testLog{}
	r, err := Open(ctx, dir, Options{ReadOnly: true, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, d := range ds {
		wantOutboard(t, r, d, data[i])
	}
	if n := len(log.lines("level=WARN", "cannot keep a blob's outboard")); n != 1 {
		t.Errorf("%d warnings about outboards not kept, want 1", n)
	}
}

package local

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// testLog collects a store's log lines.
type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *testLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines that contain every one of substrs.
func (l *testLog) lines(substrs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range strings.Split(l.buf.String(), "\n") {
		for _, s := range substrs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// rotStore is a store with one blob file and one committed packed blob,
// for bit rot tests.
type rotStore struct {
	dir              string
	fileData, packed []byte
	fileD, packedD   storeclient.Digest
	packedAt         packLoc
}

// newRotStore makes a rotStore and closes it.
func newRotStore(t *testing.T) *rotStore {
	t.Helper()
	ctx := t.Context()
	r := &rotStore{dir: filepath.Join(t.TempDir(), "store")}
	s, err := Open(ctx, r.dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.fileData = bytes.Repeat([]byte("a blob file of its own "), 5000)
	r.packed = bytes.Repeat([]byte("a packed blob "), 300)
	r.fileD, r.packedD = storeclient.HashBytes(r.fileData), storeclient.HashBytes(r.packed)
	if err := storetest.PutBlob(ctx, s, r.fileData); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, r.packedD, r.packed); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectories(ctx, nil); err != nil { // commits the packed blob
		t.Fatal(err)
	}
	loc, ok, err := s.indexLoc(ctx, r.packedD)
	if err != nil || !ok {
		t.Fatalf("packed blob not in the index: %v", err)
	}
	r.packedAt = loc
	return r
}

// flip flips one byte of both blobs on disk.
func (r *rotStore) flip(t *testing.T) {
	t.Helper()
	h := r.fileD.Hex()
	flipByte(t, filepath.Join(r.dir, blobsDir, h[:2], h), int64(len(r.fileData)/2))
	flipByte(t, filepath.Join(r.dir, packsDir, packName(r.packedAt.pack)), r.packedAt.off+r.packedAt.size/3)
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantQuarantined fails the test unless err reports a quarantined blob:
// corrupt, not missing.
func wantQuarantined(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s of a quarantined blob succeeded", what)
	case !errors.Is(err, ErrQuarantined) || !errors.Is(err, storeclient.ErrCorrupt):
		t.Errorf("%s = %v, want an error wrapping ErrQuarantined and storeclient.ErrCorrupt", what, err)
	case errors.Is(err, storeclient.ErrNotFound):
		t.Errorf("%s = %v: a quarantined blob must not look missing", what, err)
	}
}

// refused checks that every way of reading blob d fails as quarantined.
func refused(t *testing.T, s *Store, d storeclient.Digest) {
	t.Helper()
	ctx := t.Context()
	_, err := s.OpenBlob(ctx, d)
	wantQuarantined(t, "OpenBlob", err)
	_, err = s.StatBlob(ctx, d)
	wantQuarantined(t, "StatBlob", err)
	_, _, err = s.BlobFile(ctx, d)
	wantQuarantined(t, "BlobFile", err)
}

// served checks that blob d reads as want.
func served(t *testing.T, s *Store, d storeclient.Digest, want []byte) {
	t.Helper()
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatalf("OpenBlob: %v", err)
	}
	defer r.Close()
	got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("blob %s reads %d bytes that differ from the %d put", d, len(got), len(want))
	}
	if size, err := s.StatBlob(t.Context(), d); err != nil || size != int64(len(want)) {
		t.Errorf("StatBlob = %d, %v; want %d", size, err, len(want))
	}
}

// checkBoth runs checkCopy on both blobs, as the scrubber does, and
// returns the faults found.
func (r *rotStore) checkBoth(t *testing.T, s *Store) (fileFault, packedFault string) {
	t.Helper()
	buf := make([]byte, 4096)
	c, err := s.checkCopy(r.fileD, blobPlace{}, buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	fileFault = c.fault
	c, err = s.checkCopy(r.packedD, blobPlace{packed: true, loc: r.packedAt}, buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fileFault, c.fault
}

// TestQuarantine flips a byte of a blob file and of a packed blob, has
// both checked as the scrubber does, and checks what follows: readers
// refuse both (and a reader opened before), the quarantine is logged,
// persists across opens and is reported by Verify, and putting the same
// content again repairs the store for every reader.
func TestQuarantine(t *testing.T) {
	ctx := t.Context()
	r := newRotStore(t)
	r.flip(t)
	log := &testLog{}
	s, err := Open(ctx, r.dir, Options{ReadOnly: true, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before, err := s.OpenBlob(ctx, r.packedD) // opened before the quarantine
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	fileFault, packedFault := r.checkBoth(t, s)
	if fileFault == "" || packedFault == "" {
		t.Fatalf("the flipped bytes were not found: faults %q, %q", fileFault, packedFault)
	}
	refused(t, s, r.fileD)
	refused(t, s, r.packedD)
	if _, err := before.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrQuarantined) {
		t.Errorf("ReadAt of a reader opened before the quarantine = %v, want ErrQuarantined", err)
	}
	if got := s.QuarantineCount(); got != 2 {
		t.Errorf("QuarantineCount = %d, want 2", got)
	}
	for _, d := range []storeclient.Digest{r.fileD, r.packedD} {
		if lines := log.lines("level=ERROR", "quarantined", d.String()); len(lines) != 1 {
			t.Errorf("log lines quarantining %s: %q, want one", d, lines)
		}
	}
	if lines := log.lines("file=" + filepath.Join(r.dir, blobsDir, r.fileD.Hex()[:2], r.fileD.Hex())); len(lines) != 1 {
		t.Errorf("the quarantine log line does not name the blob file: %q", log.lines("quarantined"))
	}
	h := r.fileD.Hex()
	if _, err := os.Stat(filepath.Join(r.dir, quarantineDir, h)); err != nil {
		t.Errorf("the blob file is not in the quarantine directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, blobsDir, h[:2], h)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the blob file is still among the blobs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, quarantineDir, r.packedD.Hex()+packedMarkerExt)); err != nil {
		t.Errorf("the packed blob has no quarantine marker: %v", err)
	}

	// Another opener sees the quarantine, and Verify reports it.
	other, err := Open(ctx, r.dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	refused(t, other, r.fileD)
	refused(t, other, r.packedD)
	var problems []Problem
	if _, err := other.Verify(ctx, func(p Problem) { problems = append(problems, p) }); err != nil {
		t.Fatal(err)
	}
	for _, d := range []storeclient.Digest{r.fileD, r.packedD} {
		found := false
		for _, p := range problems {
			found = found || p.Kind == ProblemQuarantined && p.ID == d.String()
			if p.Kind == ProblemMissing && p.ID == d.String() {
				t.Errorf("Verify reports the quarantined blob as missing: %v", p)
			}
		}
		if !found {
			t.Errorf("Verify does not report quarantined blob %s: %v", d, problems)
		}
	}

	// Putting the same content again repairs the store.
	w, err := Open(ctx, r.dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	refused(t, w, r.packedD)
	if err := w.PutSmallBlob(ctx, r.packedD, r.packed); err != nil {
		t.Fatal(err)
	}
	if err := storetest.PutBlob(ctx, w, r.fileData); err != nil {
		t.Fatal(err)
	}
	if err := w.PutDirectories(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{w, s, other} {
		served(t, st, r.fileD, r.fileData)
		served(t, st, r.packedD, r.packed)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(filepath.Join(r.dir, quarantineDir)); err != nil || len(entries) != 0 {
		t.Errorf("the quarantine directory holds %v after the repair (%v), want nothing", entries, err)
	}
	problems = nil
	if _, err := other.Verify(ctx, func(p Problem) { problems = append(problems, p) }); err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Errorf("Verify after the repair reports %v", problems)
	}
}

// TestQuarantineInMemory makes the quarantine directory impossible to
// create (a file is in its place): quarantined blobs are refused by the
// Store that found them, which logs once that the quarantine is not
// persisted, and the same Store repairs them when they are put again.
func TestQuarantineInMemory(t *testing.T) {
	ctx := t.Context()
	r := newRotStore(t)
	r.flip(t)
	if err := os.WriteFile(filepath.Join(r.dir, quarantineDir), []byte("in the way"), 0o444); err != nil {
		t.Fatal(err)
	}
	log := &testLog{}
	s, err := Open(ctx, r.dir, Options{NoSync: true, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, p := r.checkBoth(t, s); f == "" || p == "" {
		t.Fatalf("the flipped bytes were not found: faults %q, %q", f, p)
	}
	refused(t, s, r.fileD)
	refused(t, s, r.packedD)
	if lines := log.lines("level=WARN", "cannot be written"); len(lines) != 1 {
		t.Errorf("log lines about the quarantine not being persisted: %q, want one", lines)
	}
	h := r.fileD.Hex()
	if _, err := os.Stat(filepath.Join(r.dir, blobsDir, h[:2], h)); err != nil {
		t.Errorf("the blob file was not left in place: %v", err)
	}

	if err := s.PutSmallBlob(ctx, r.packedD, r.packed); err != nil {
		t.Fatal(err)
	}
	if err := storetest.PutBlob(ctx, s, r.fileData); err != nil {
		t.Fatal(err)
	}
	served(t, s, r.fileD, r.fileData)
	served(t, s, r.packedD, r.packed) // from the pending entry
	if err := s.PutDirectories(ctx, nil); err != nil {
		t.Fatal(err)
	}
	served(t, s, r.packedD, r.packed) // from the index
	if got := s.QuarantineCount(); got != 0 {
		t.Errorf("QuarantineCount after the repair = %d, want 0", got)
	}
}

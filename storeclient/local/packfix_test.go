package local

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
)

// TestCommitSyncsAppends checks that a commit that takes a just-appended
// entry also syncs: the append is counted before the entry is published.
func TestCommitSyncsAppends(t *testing.T) {
	for _, direct := range []bool{false, true} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.pw.direct = direct
		a := []byte("first blob")
		if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(a), a); err != nil {
			t.Fatal(err)
		}
		if err := s.PutDirectories(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		synced := s.syncedGen
		// What PutSmallBlob does, stopped right after the append, when
		// another goroutine commits.
		b := []byte("second blob")
		d := storeclient.HashBytes(b)
		if _, err := s.appendBlob(d, b); err != nil {
			t.Fatal(err)
		}
		if err := s.PutDirectories(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		var committed bool
		s.withDB(t.Context(), false, func(tx *bolt.Tx) error {
			committed = tx.Bucket(bucketPacked).Get(d[:]) != nil
			return nil
		})
		if !committed {
			t.Fatalf("direct=%v: the commit did not take the appended entry", direct)
		}
		if s.syncedGen == synced {
			t.Errorf("direct=%v: entry committed with no syncfs after its bytes were written", direct)
		}
	}
}

// TestWillNeedCorruptSize checks that a corrupt entry size (bbolt has no
// checksums) cannot keep WillNeed busy: ranges end at the pack's end.
func TestWillNeedCorruptSize(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(t.Context(), dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("a small blob")
	d := storeclient.HashBytes(b)
	if err := s.PutSmallBlob(t.Context(), d, b); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectories(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	err = s.withDB(t.Context(), true, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPacked)
		loc, err := decodeLoc(bk.Get(d[:]))
		if err != nil {
			return err
		}
		loc.size = 1 << 62
		return bk.Put(d[:], loc.encode())
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := Open(t.Context(), dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	done := make(chan error, 1)
	go func() {
		_, err := ro.WillNeed(t.Context(), []storeclient.Digest{d})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WillNeed of an entry with a corrupt size of 2^62 bytes did not return within 30 s")
	}
}

// TestVerifyFindsLaterPacks checks that verify looks a packed blob up
// again when the index it read at its start does not have it: an import
// running next to verify packs blobs meanwhile.
func TestVerifyFindsLaterPacks(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := []byte("packed after verify read the index")
	d := storeclient.HashBytes(b)
	if err := s.PutSmallBlob(t.Context(), d, b); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectories(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	var problems []Problem
	err = s.checkNode(t.Context(), storeclient.FileNode(d, uint64(len(b)), false), "entry \"f\"", map[storeclient.Digest]int64{}, func(p Problem) { problems = append(problems, p) }, &damageReports{})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("verify reports %v for a blob packed after it read the index", problems)
	}
}

// TestMissingLastPack checks that a writer whose last pack is gone
// appends to a new pack instead of failing every put.
func TestMissingLastPack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := []byte("in the pack that goes missing")
	if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(a), a); err != nil {
		t.Fatal(err)
	}
	id := s.pw.curID
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, packsDir, packName(id))); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := []byte("put after the last pack went missing")
	d := storeclient.HashBytes(b)
	if err := s.PutSmallBlob(t.Context(), d, b); err != nil {
		t.Fatalf("put with the last pack missing: %v", err)
	}
	if got := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Fatalf("read back %q, want %q", got, b)
	}
}

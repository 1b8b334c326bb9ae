package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

// newFilledStore creates a local store holding the fixtures and returns its
// directory.
func newFilledStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(t.Context(), dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runCommand runs storefs with args in-process and returns its output.
func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func TestVerifyHealthyStore(t *testing.T) {
	dir := newFilledStore(t)
	out, err := runCommand(t, "--store", "local:"+dir, "verify")
	if err != nil {
		t.Fatalf("verify of a healthy store: %v\n%s", err, out)
	}
	want := "checked 4 blobs (1020.0 KiB), 6 directories, 7 store paths in "
	if !strings.HasPrefix(out, want) || !strings.HasSuffix(out, ": 0 problems\n") {
		t.Errorf("output %q, want one summary line %q… 0 problems", out, want)
	}
}

func TestVerifyCorruptStore(t *testing.T) {
	dir := newFilledStore(t)
	d := storeclient.HashBytes(storetest.HelloWorld)
	path := filepath.Join(dir, "blobs", d.Hex()[:2], d.Hex())
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("Hello World?"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := storeclient.HashBytes(storetest.BlobA)
	if err := os.Remove(filepath.Join(dir, "blobs", missing.Hex()[:2], missing.Hex())); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, "--store", dir, "verify")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a corrupt store = %v, want exit status 1\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("output has %d lines, want 2 problems and a summary:\n%s", len(lines), out)
	}
	for _, want := range []string{"corrupt blob " + d.String(), "missing blob " + missing.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not report %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(lines[2], ": 2 problems") {
		t.Errorf("summary %q does not count 2 problems", lines[2])
	}
}

func TestVerifyUnsupportedStore(t *testing.T) {
	_, err := runCommand(t, "--store", "memory:", "verify")
	if err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("verify of a memory store = %v, want an error saying it is not supported", err)
	}
}

// TestVerifyDamagedDatabase damages meta.db the way bit rot would (a page
// that bbolt panics on): verify must name the damage, still check the
// blobs, and exit 1 instead of panicking.
func TestVerifyDamagedDatabase(t *testing.T) {
	dir := newFilledStore(t)
	path := filepath.Join(dir, "meta.db")
	db, err := bolt.Open(path, 0o644, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int64(db.Info().PageSize)
	var root int64
	err = db.View(func(tx *bolt.Tx) error {
		root = int64(tx.Cursor().Bucket().Root()) // the page that holds the buckets
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(make([]byte, pageSize), root*pageSize)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	out, err := runCommand(t, "--store", dir, "verify")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a store with a damaged meta.db = %v, want exit status 1\n%s", err, out)
	}
	t.Logf("verify output:\n%s", out)
	if !strings.Contains(out, "corrupt database meta.db: ") {
		t.Errorf("output does not name the damaged database:\n%s", out)
	}
	if !strings.Contains(out, "checked 4 blobs (1020.0 KiB)") {
		t.Errorf("output does not show the blobs checked beside the damage:\n%s", out)
	}
}

// TestVerifyQuarantined has the scrubber quarantine a blob whose bytes
// rotted: verify must report it as quarantined (not missing) and exit 1.
func TestVerifyQuarantined(t *testing.T) {
	dir := newFilledStore(t)
	d := storeclient.HashBytes(storetest.HelloWorld)
	path := filepath.Join(dir, "blobs", d.Hex()[:2], d.Hex())
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("Hello World?"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := local.Open(t.Context(), dir, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	err = s.Scrub(ctx, local.ScrubOptions{BytesPerSecond: 1 << 30, StartDelay: -1, Interval: time.Hour,
		OnPass: func(local.ScrubStats) { cancel() }})
	s.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Scrub = %v, want it cancelled after its first pass", err)
	}

	out, err := runCommand(t, "--store", dir, "verify")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a store with a quarantined blob = %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(out, "quarantined blob "+d.String()+": ") {
		t.Errorf("output does not report the quarantined blob %s:\n%s", d, out)
	}
	if strings.Contains(out, "missing blob "+d.String()) {
		t.Errorf("output reports the quarantined blob as missing:\n%s", out)
	}
}

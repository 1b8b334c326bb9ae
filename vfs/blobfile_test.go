package vfs_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// TestBlobFile checks which files vfs hands to the kernel as file ranges:
// blobs of a trusted-local store held whole by their file, at their
// offset, and nothing else.
func TestBlobFile(t *testing.T) {
	ctx := t.Context()
	s, err := local.Open(ctx, t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := bytes.Repeat([]byte("big blob "), 300000)   // a blob file of its own
	small := bytes.Repeat([]byte("small blob "), 3000) // packed
	add := func(name string, b []byte, packed bool) {
		if packed {
			err = s.PutSmallBlob(ctx, storeclient.HashBytes(b), b)
		} else {
			err = storetest.PutBlob(ctx, s, b)
		}
		if err != nil {
			t.Fatal(err)
		}
		pi, err := storetest.PathInfoFor(name, storeclient.FileNode(storeclient.HashBytes(b), uint64(len(b)), false))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(ctx, pi); err != nil {
			t.Fatal(err)
		}
	}
	add(storetest.RootBlobA, big, false)
	add(storetest.RootBlobB, small, true)
	fsys, err := vfs.New(s, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := func(fsys *vfs.FS, name string) *vfs.File {
		t.Helper()
		n, err := fsys.Lookup(ctx, fsys.Root(), name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := fsys.Open(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	check := func(name string, want []byte, wantPacked bool) {
		t.Helper()
		bf, off, ok := open(fsys, name).BlobFile()
		if !ok {
			t.Fatalf("%s: no blob file", name)
		}
		if (off != 0) != wantPacked {
			t.Errorf("%s: offset %d, packed %v", name, off, wantPacked)
		}
		got := make([]byte, len(want))
		if _, err := bf.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: the range at %d of %s is not the blob (%v)", name, off, bf.Name(), err)
		}
	}
	check(storetest.RootBlobA, big, false)
	check(storetest.RootBlobB, small, true)

	// A pack cut inside the blob: not handed out (ReadAt answers EIO).
	bf, off, _ := open(fsys, storetest.RootBlobB).BlobFile()
	if err := os.Truncate(bf.Name(), off+int64(len(small))-1); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := open(fsys, storetest.RootBlobB).BlobFile(); ok {
		t.Error("a blob file shorter than its blob is handed out")
	}

	// A store whose readers have no files.
	m := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, m, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := vfs.New(m, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := open(mfs, storetest.RootBlobA).BlobFile(); ok {
		t.Error("a memory store's blob is handed out as a file")
	}
}

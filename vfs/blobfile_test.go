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
	// blobFile reads the whole file and returns the file range it came as.
	blobFile := func(fsys *vfs.FS, name string) (vfs.ReadResult, bool) {
		t.Helper()
		f := open(fsys, name)
		res, err := f.Read(make([]byte, f.Size()+10), 0)
		if err != nil {
			t.Fatalf("%s: read: %v", name, err)
		}
		if res.Len != int(f.Size()) {
			t.Errorf("%s: read %d bytes of %d", name, res.Len, f.Size())
		}
		return res, res.File != nil
	}
	check := func(name string, want []byte, wantPacked bool) {
		t.Helper()
		res, ok := blobFile(fsys, name)
		if !ok {
			t.Fatalf("%s: no blob file", name)
		}
		if (res.Off != 0) != wantPacked {
			t.Errorf("%s: offset %d, packed %v", name, res.Off, wantPacked)
		}
		if _, ok := open(fsys, name).PassthroughFile(); ok == wantPacked {
			t.Errorf("%s: passthrough file %v for a blob packed %v", name, ok, wantPacked)
		}
		got := make([]byte, len(want))
		if _, err := res.File.ReadAt(got, res.Off); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: the range at %d of %s is not the blob (%v)", name, res.Off, res.File.Name(), err)
		}
		if b, err := res.Bytes(make([]byte, res.Len)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: ReadResult.Bytes: %v", name, err)
		}
	}
	check(storetest.RootBlobA, big, false)
	check(storetest.RootBlobB, small, true)

	// A pack cut inside the blob: not handed out; reads answer EIO.
	res, _ := blobFile(fsys, storetest.RootBlobB)
	if err := os.Truncate(res.File.Name(), res.Off+int64(len(small))-1); err != nil {
		t.Fatal(err)
	}
	f := open(fsys, storetest.RootBlobB)
	if res, err := f.Read(make([]byte, len(small)), 0); err == nil || res.File != nil {
		t.Errorf("a blob file shorter than its blob: %+v, %v; want EIO", res, err)
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
	if _, ok := blobFile(mfs, storetest.RootBlobA); ok {
		t.Error("a memory store's blob is handed out as a file")
	}
}

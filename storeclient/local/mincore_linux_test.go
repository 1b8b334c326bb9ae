package local

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
)

// residentPages counts the pages of the file at path that are in the page
// cache (mincore(2) of a mapping of it).
func residentPages(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, errno
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n, nil
}

// directSupported reports whether dir's filesystem takes O_DIRECT opens.
func directSupported(t *testing.T, dir string) bool {
	f, err := os.CreateTemp(dir, "direct-probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return setDirect(f, true) == nil
}

// TestCachedWrites checks where a big blob's bytes end up: past the page
// cache by default on a store that syncs, in it with CachedWrites.
func TestCachedWrites(t *testing.T) {
	for _, cached := range []bool{false, true} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{CachedWrites: cached})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		data := bytes.Repeat([]byte{byte(len("cached"))}, 8<<20)
		if cached {
			data[0] = 1 // another blob
		}
		w, err := s.NewBlobWriter(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		d, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		resident, err := residentPages(s.blobPath(d))
		if err != nil {
			t.Fatal(err)
		}
		pages := len(data) / os.Getpagesize()
		if cached && resident < pages*9/10 {
			t.Errorf("CachedWrites: %d of %d pages in the page cache, want all", resident, pages)
		}
		if !cached && directSupported(t, filepath.Dir(s.blobPath(d))) && resident > pages/2 {
			t.Errorf("default: %d of %d pages in the page cache, want only the tail", resident, pages)
		}
	}
}

// TestDirectPackNotCached checks that staged pack appends reach the disk
// past the page cache: only the last, partial stage of a pack goes
// through it.
func TestDirectPackNotCached(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !directSupported(t, filepath.Join(s.dir, packsDir)) {
		t.Skip("the filesystem of the test directory refuses O_DIRECT")
	}
	var total int
	for _, b := range directBlobs(200, 4) {
		if err := s.PutSmallBlob(t.Context(), storeclient.HashBytes(b), b); err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	if err := s.flushPacks(t.Context()); err != nil {
		t.Fatal(err)
	}
	resident, err := residentPages(s.packPath(s.pw.curID))
	if err != nil {
		t.Fatal(err)
	}
	pages := total / os.Getpagesize()
	if max := bigChunk/os.Getpagesize() + 2; resident > max {
		t.Errorf("%d of the pack's %d pages are in the page cache, want at most the last stage's %d", resident, pages, max)
	}
}

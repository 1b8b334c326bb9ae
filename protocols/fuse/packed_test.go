package fuse

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
)

// TestPackedFiles reads an imported tree of small files, which the local
// store packs, in every read mode: whole files and reads at odd offsets,
// most of them after the prefetcher stored them in the kernel's cache.
// Packed files are never passed through or spliced (their blob starts
// inside a pack): they are read through vfs at their offset in the pack.
func TestPackedFiles(t *testing.T) {
	e2etest.NeedFUSE(t)
	src := filepath.Join(t.TempDir(), "tree")
	files := map[string][]byte{}
	for d := range 3 {
		for i := range 40 {
			b := make([]byte, 1+(d*4099+i*7919)%(90<<10))
			for j := range b {
				b[j] = byte(d*13 + i*7 + j*3)
			}
			copy(b, fmt.Sprintf("dir %d file %d", d, i))
			files[filepath.Join(fmt.Sprintf("d%d", d), fmt.Sprintf("f%03d", i))] = b
		}
	}
	for name, b := range files {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := localStore(t)
	pi, err := importer.ImportPath(t.Context(), s, src, importer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		r, err := s.OpenBlob(t.Context(), storeclient.HashBytes(b))
		if err != nil {
			t.Fatal(err)
		}
		packed := r.(interface{ FileOffset() int64 }).FileOffset() != 0
		r.Close()
		if !packed {
			t.Fatalf("%s is not packed: the test reads no packed file", name)
		}
	}
	for _, m := range readModes {
		t.Run(m.name, func(t *testing.T) {
			srv := mountFS(t, m.vfs(t, s), MountOptions{Options: m.opts})
			root := filepath.Join(srv.Dir(), pi.StorePath.Basename())
			// List the directories (the kernel then knows their files),
			// open one file of each and give the prefetcher a moment: the
			// reads below then find most files stored in the kernel's
			// cache by the prefetcher, the others are read as usual.
			for d := range 3 {
				dir := filepath.Join(root, fmt.Sprintf("d%d", d))
				if _, err := os.ReadDir(dir); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(filepath.Join(dir, "f000"))
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			time.Sleep(100 * time.Millisecond)
			for name, want := range files {
				got, err := os.ReadFile(filepath.Join(root, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: read %d bytes, not its %d bytes of content", name, len(got), len(want))
				}
				f, err := os.Open(filepath.Join(root, name))
				if err != nil {
					t.Fatal(err)
				}
				for _, off := range []int64{1, 4095, int64(len(want)) / 3, int64(len(want)) - 1} {
					if off < 0 || off >= int64(len(want)) {
						continue
					}
					p := make([]byte, 5000)
					n, err := f.ReadAt(p, off)
					if err != nil && err != io.EOF {
						t.Fatalf("%s: ReadAt(%d): %v", name, off, err)
					}
					if !bytes.Equal(p[:n], want[off:min(off+5000, int64(len(want)))]) {
						t.Fatalf("%s: ReadAt(%d) reads other bytes", name, off)
					}
				}
				f.Close()
			}
		})
	}
}

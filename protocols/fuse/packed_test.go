package fuse

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
)

// TestPackedFiles reads an imported tree of small files, which the local
// store packs, in every read mode: whole files and reads at odd offsets,
// the second directory after the first (its prefetch is a pack range).
// Packed files cannot be passed through (their blob starts inside a
// pack), so in passthrough mode too they are spliced from the pack at
// their offset.
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
		packed := r.(FileBlob).FileOffset() != 0
		r.Close()
		if !packed {
			t.Fatalf("%s is not packed: the test reads no packed file", name)
		}
	}
	for _, m := range readModes {
		t.Run(m.name, func(t *testing.T) {
			srv := mountFS(t, newVFS(t, s), MountOptions{Options: m.opts(s)})
			root := filepath.Join(srv.Dir(), pi.StorePath.Basename())
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

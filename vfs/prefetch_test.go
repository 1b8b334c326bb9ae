package vfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

// TestPrefetch checks what vfs reads ahead for each kind of store: a
// trusted local store's packed blobs through its readahead, its blob files
// by advice; nothing for a store without blob files or an untrusted one.
func TestPrefetch(t *testing.T) {
	ctx := t.Context()
	s, err := local.Open(ctx, t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := bytes.Repeat([]byte("blob file "), 200000)  // a blob file of its own
	small := bytes.Repeat([]byte("packed blob "), 300) // packed
	files := map[string][]byte{storetest.RootBlobA: big, storetest.RootBlobB: small}
	if err := storetest.PutBlob(ctx, s, big); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSmallBlob(ctx, storeclient.HashBytes(small), small); err != nil {
		t.Fatal(err)
	}
	mem := memory.New()
	for name, b := range files {
		if err := storetest.PutBlob(ctx, mem, b); err != nil {
			t.Fatal(err)
		}
		pi, err := storetest.PathInfoFor(name, storeclient.FileNode(storeclient.HashBytes(b), uint64(len(b)), false))
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []storeclient.Store{s, mem} {
			if err := st.PutPathInfo(ctx, pi); err != nil {
				t.Fatal(err)
			}
		}
	}
	names := []string{storetest.RootBlobA, storetest.RootBlobB}
	tests := []struct {
		name          string
		store         storeclient.Store
		wantLocal     bool
		wantAhead     []string
		wantRest      []string
		wantReadErrno syscall.Errno // of ReadPrefetched; 0: it reads
	}{
		{name: "local", store: s, wantLocal: true, wantAhead: names[1:], wantRest: names[:1]},
		{name: "trusted without blob files", store: mem, wantRest: names},
		{name: "untrusted", store: vfstest.Untrusted(s), wantReadErrno: syscall.ENOTSUP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys, err := vfs.New(tt.store, vfs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := fsys.LocalBlobFiles(); got != tt.wantLocal {
				t.Errorf("LocalBlobFiles = %v, want %v", got, tt.wantLocal)
			}
			var ns []vfs.Node
			for _, name := range names {
				n, err := fsys.Lookup(ctx, fsys.Root(), name)
				if err != nil {
					t.Fatal(err)
				}
				ns = append(ns, n)
			}
			ns = append(ns, fsys.Root()) // not a file: left out
			ahead, rest, err := fsys.Prefetch(ctx, ns)
			if err != nil {
				t.Fatalf("Prefetch: %v", err)
			}
			if got := namesOf(t, fsys, ahead); !slices.Equal(got, tt.wantAhead) {
				t.Errorf("Prefetch read ahead %v, want %v", got, tt.wantAhead)
			}
			if got := namesOf(t, fsys, rest); !slices.Equal(got, tt.wantRest) {
				t.Errorf("Prefetch left %v, want %v", got, tt.wantRest)
			}
			buf := make([]byte, len(big))
			for i, n := range ns[:len(names)] {
				if err := fsys.PrefetchFile(ctx, n); err != nil {
					t.Errorf("PrefetchFile(%s): %v", names[i], err)
				}
				b, err := fsys.ReadPrefetched(ctx, n, buf)
				if tt.wantReadErrno != 0 {
					if vfs.Errno(err) != tt.wantReadErrno {
						t.Errorf("ReadPrefetched(%s) = %v, want errno %v", names[i], err, tt.wantReadErrno)
					}
					continue
				}
				if err != nil || !bytes.Equal(b, files[names[i]]) {
					t.Errorf("ReadPrefetched(%s) = %d bytes, %v; want its %d bytes", names[i], len(b), err, len(files[names[i]]))
				}
			}
			if _, err := fsys.ReadPrefetched(ctx, ns[0], make([]byte, 10)); tt.wantReadErrno == 0 && vfs.Errno(err) != syscall.EINVAL {
				t.Errorf("ReadPrefetched into a short buffer = %v, want EINVAL", err)
			}
		})
	}
}

// goneBlobs is a local store whose blobs have all gone missing from disk.
type goneBlobs struct{ *local.Store }

func (goneBlobs) OpenBlob(_ context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	return nil, fmt.Errorf("blob %s: %w", d, storeclient.ErrNotFound)
}

func (goneBlobs) BlobFile(_ context.Context, d storeclient.Digest) (*os.File, int64, error) {
	return nil, 0, fmt.Errorf("blob file %s: %w", d, storeclient.ErrNotFound)
}

// TestPrefetchMissing checks that a blob that is gone is EIO from
// PrefetchFile and ReadPrefetched.
func TestPrefetchMissing(t *testing.T) {
	ctx := t.Context()
	s, err := local.Open(ctx, t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := storetest.NewFixtures().Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	fsys, err := vfs.New(goneBlobs{s}, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := fsys.Lookup(ctx, fsys.Root(), storetest.RootBlobA)
	if err != nil {
		t.Fatal(err)
	}
	if !fsys.LocalBlobFiles() {
		t.Fatal("LocalBlobFiles = false for a local store")
	}
	if err := fsys.PrefetchFile(ctx, n); vfs.Errno(err) != syscall.EIO || !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("PrefetchFile of a missing blob = %v, want EIO wrapping ErrNotFound", err)
	}
	if _, err := fsys.ReadPrefetched(ctx, n, make([]byte, 1<<20)); vfs.Errno(err) != syscall.EIO {
		t.Errorf("ReadPrefetched of a missing blob = %v, want EIO", err)
	}
}

// namesOf returns the store path names of top-level nodes ns.
func namesOf(t *testing.T, fsys *vfs.FS, ns []vfs.Node) []string {
	t.Helper()
	var out []string
	for _, n := range ns {
		for _, name := range []string{storetest.RootBlobA, storetest.RootBlobB} {
			m, err := fsys.Lookup(t.Context(), fsys.Root(), name)
			if err == nil && m.Ino() == n.Ino() {
				out = append(out, name)
			}
		}
	}
	return out
}

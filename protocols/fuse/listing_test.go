package fuse

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestListingCacheFlags: directories below the root are opened with
// FOPEN_CACHE_DIR unless Options.NoListingCache; the root never is.
func TestListingCacheFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		wantBelow uint32
	}{
		{"default", Options{}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE},
		{"NoListingCache", Options{NoListingCache: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, root := findTree(t, 1, 3)
			raw := initRawFS(t, s, tc.opts)
			cancel := make(chan struct{})
			opendir := func(id uint64) uint32 {
				var open fuse.OpenOut
				if st := raw.OpenDir(cancel, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: id}}, &open); !st.Ok() {
					t.Fatalf("opendir %d: %v", id, st)
				}
				raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh})
				return open.OpenFlags & (fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE)
			}
			if got := opendir(fuse.FUSE_ROOT_ID); got != 0 {
				t.Errorf("root opened with flags %#x, want none (it can grow)", got)
			}
			var e fuse.EntryOut
			if st := raw.Lookup(cancel, &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}, root, &e); !st.Ok() {
				t.Fatalf("lookup %s: %v", root, st)
			}
			if got := opendir(e.NodeId); got != tc.wantBelow {
				t.Errorf("store path directory opened with flags %#x, want %#x", got, tc.wantBelow)
			}
		})
	}
}

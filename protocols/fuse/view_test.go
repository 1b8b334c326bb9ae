package fuse

import (
	"testing"

	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/vfs"
)

// The filesystem labels an unlabelled vfs "fuse" and keeps the label of a
// view it is given (virtio-fs serves it as "virtiofs"), so each frontend's
// operations are reported under its own name.
func TestViewLabel(t *testing.T) {
	fsys, err := vfs.New(memory.New(), vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   *vfs.FS
		want string
	}{{fsys, "fuse"}, {fsys.View("virtiofs"), "virtiofs"}} {
		_, s := newFileSystem(tc.in, Options{})
		if got := s.vfs.Protocol(); got != tc.want {
			t.Errorf("view %q: the filesystem reports as %q, want %q", tc.in.Protocol(), got, tc.want)
		}
	}
}

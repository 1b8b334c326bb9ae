package fuse

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestBlockSizes: regular files advertise the large preferred I/O size;
// directories advertise 4 KiB, so that opendir does not allocate a
// 128 KiB getdents buffer for each directory walked. Lookup and GETATTR
// agree.
func TestBlockSizes(t *testing.T) {
	s, root := findTree(t, 1, 1)
	raw := initRawFS(t, s, Options{})
	cancel := make(chan struct{})
	parent := uint64(fuse.FUSE_ROOT_ID)
	for _, step := range []struct {
		name string
		want uint32
	}{
		{root, dirBlockSize},
		{"s000", dirBlockSize},
		{"f00000.dat", fileBlockSize},
	} {
		var e fuse.EntryOut
		if st := raw.Lookup(cancel, &fuse.InHeader{NodeId: parent}, step.name, &e); !st.Ok() {
			t.Fatalf("lookup %s: %v", step.name, st)
		}
		if e.Attr.Blksize != step.want {
			t.Errorf("lookup %s: blksize %d, want %d", step.name, e.Attr.Blksize, step.want)
		}
		var a fuse.AttrOut
		if st := raw.GetAttr(cancel, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: e.NodeId}}, &a); !st.Ok() {
			t.Fatalf("getattr %s: %v", step.name, st)
		}
		if a.Attr.Blksize != step.want {
			t.Errorf("getattr %s: blksize %d, want %d", step.name, a.Attr.Blksize, step.want)
		}
		parent = e.NodeId
	}
	var rootAttr fuse.AttrOut
	if st := raw.GetAttr(cancel, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}}, &rootAttr); !st.Ok() {
		t.Fatalf("getattr /: %v", st)
	}
	if rootAttr.Attr.Blksize != dirBlockSize {
		t.Errorf("getattr /: blksize %d, want %d", rootAttr.Attr.Blksize, dirBlockSize)
	}
}

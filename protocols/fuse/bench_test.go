package fuse

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// initRawFS returns the FUSE filesystem over store s, after INIT.
func initRawFS(tb testing.TB, s *memory.Store, opts Options) fuse.RawFileSystem {
	tb.Helper()
	fsys, err := vfs.New(s, vfs.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	raw := NewRawFileSystem(fsys, opts)
	raw.Init(nil)
	return raw
}

// findTree returns a store with one store path of dirs directories of
// files files each, named like the bench corpus.
func findTree(b testing.TB, dirs, files int) (*memory.Store, string) {
	s := memory.New()
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	put := func(es []storeclient.Entry) storeclient.Node {
		d, err := storeclient.NewDirectory(es...)
		if err != nil {
			b.Fatal(err)
		}
		dg, err := s.PutDirectory(ctx, d)
		if err != nil {
			b.Fatal(err)
		}
		return storeclient.DirectoryNode(dg, d.Size())
	}
	var top []storeclient.Entry
	for i := range dirs {
		var es []storeclient.Entry
		for j := range files {
			es = append(es, storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("f%05d.dat", j)),
				Node: storeclient.FileNode(storeclient.HashBytes(fmt.Appendf(nil, "%d/%d", i, j)), uint64(1024+j), false)})
		}
		top = append(top, storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("s%03d", i)), Node: put(es)})
	}
	const root = "77777777777777777777777777777777-find"
	p, _ := storetest.PathInfoFor(root, put(top))
	if err := s.PutPathInfo(ctx, p); err != nil {
		b.Fatal(err)
	}
	return s, root
}

// The READDIRPLUS reply layout: struct fuse_entry_out, then struct
// fuse_dirent (ino, off, namelen, type) and the name padded to 8 bytes.
const (
	entryOutSize = int(unsafe.Sizeof(fuse.EntryOut{}))
	direntSize   = 24
)

// BenchmarkColdFind is what a guest's find does after it dropped its
// caches, as the FUSE frontend sees it: a LOOKUP of the store path, then
// OPENDIR, READDIRPLUS in 4 KiB replies and RELEASEDIR of it and of every
// directory below, and at the end a FORGET of every node it was given.
// The store and vfs are warm; the cost is the frontend's own.
func BenchmarkColdFind(b *testing.B) {
	const dirs, files = 70, 100
	s, root := findTree(b, dirs, files)
	raw := initRawFS(b, s, Options{})
	cancel := make(chan struct{})
	buf := make([]byte, 4096)
	lookups := map[uint64]uint64{}
	listDir := func(id uint64) []uint64 {
		var open fuse.OpenOut
		if st := raw.OpenDir(cancel, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: id}}, &open); !st.Ok() {
			b.Fatalf("opendir %d: %v", id, st)
		}
		var subdirs []uint64
		off := uint64(0)
		for {
			l := fuse.NewDirEntryList(buf, off)
			in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh, Offset: off, Size: uint32(len(buf))}
			if st := raw.ReadDirPlus(cancel, in, l); !st.Ok() {
				b.Fatalf("readdirplus %d: %v", id, st)
			}
			if l.Offset == off {
				break
			}
			off = l.Offset
			// Walk the reply as the kernel does: entry_out, dirent, name.
			for p := l.Bytes(); len(p) > 0; {
				e := (*fuse.EntryOut)(unsafe.Pointer(&p[0]))
				nameLen := int(binary.LittleEndian.Uint32(p[entryOutSize+16:]))
				if e.NodeId != 0 {
					lookups[e.NodeId]++
					if e.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
						subdirs = append(subdirs, e.NodeId)
					}
				}
				p = p[entryOutSize+direntSize+(nameLen+7)&^7:]
			}
		}
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh})
		return subdirs
	}
	b.ReportAllocs()
	entries := 0
	for b.Loop() {
		var out fuse.EntryOut
		if st := raw.Lookup(cancel, &fuse.InHeader{NodeId: 1}, root, &out); !st.Ok() {
			b.Fatalf("lookup: %v", st)
		}
		lookups[out.NodeId]++
		entries = 0
		for _, d := range listDir(out.NodeId) {
			listDir(d)
		}
		for id, n := range lookups {
			entries += int(n)
			raw.Forget(id, n)
		}
		clear(lookups)
	}
	if entries != 1+dirs+dirs*files {
		b.Fatalf("find saw %d nodes, want %d", entries, 1+dirs+dirs*files)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries), "ns/entry")
}

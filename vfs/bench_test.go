package vfs_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// BenchmarkLookupGetattr is the hot path of every protocol: a lookup in a
// cached directory and the attributes of the result.
func BenchmarkLookupGetattr(b *testing.B) {
	fsys := newFS(b, fixtures(b), vfs.Options{})
	ctx := context.Background()
	dir, err := fsys.Walk(ctx, storetest.RootComplicated, false)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fsys.Lookup(ctx, dir, "keep"); err != nil { // warm the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		n, err := fsys.Lookup(ctx, dir, "keep")
		if err != nil {
			b.Fatal(err)
		}
		if fsys.Attr(n).Ino == 0 {
			b.Fatal("no inode")
		}
	}
}

// bigDirStore returns a store with one root directory of n files.
func bigDirStore(b *testing.B, n int) (*memory.Store, string) {
	s := memory.New()
	b.Cleanup(func() { s.Close() })
	es := make([]storeclient.Entry, n)
	for i := range es {
		es[i] = storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("file-%06d", i)),
			Node: storeclient.FileNode(storeclient.HashBytes(fmt.Appendf(nil, "%d", i)), uint64(i), false)}
	}
	dir, err := storeclient.NewDirectory(es...)
	if err != nil {
		b.Fatal(err)
	}
	d, err := s.PutDirectory(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	const root = "77777777777777777777777777777777-big"
	p, _ := storetest.PathInfoFor(root, storeclient.DirectoryNode(d, dir.Size()))
	if err := s.PutPathInfo(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	return s, root
}

// BenchmarkReadDir10000 lists a warm 10 000-entry directory in one call,
// with the attributes of every entry (readdirplus).
func BenchmarkReadDir10000(b *testing.B) {
	s, root := bigDirStore(b, 10000)
	fsys := newFS(b, s, vfs.Options{})
	ctx := context.Background()
	dir, err := fsys.Walk(ctx, root, false)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fsys.ReadDir(ctx, dir, 0, vfs.ReadDirAll); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		es, err := fsys.ReadDir(ctx, dir, 0, vfs.ReadDirAll)
		if err != nil || len(es) != 10000 {
			b.Fatal(len(es), err)
		}
		for _, e := range es {
			_ = fsys.Attr(e.Node)
		}
	}
}

// treeStore returns a store whose one root holds 100 directories of 100
// directories of 9 files: 100 + 10 000 directories and 90 000 files,
// about 100 000 nodes in 10 101 distinct Directories.
func treeStore(b *testing.B) *memory.Store {
	s := memory.New()
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	var top []storeclient.Entry
	for i := range 100 {
		var mid []storeclient.Entry
		for j := range 100 {
			var leaf []storeclient.Entry
			for k := range 9 {
				leaf = append(leaf, storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("f%d", k)),
					Node: storeclient.FileNode(storeclient.HashBytes(fmt.Appendf(nil, "%d/%d/%d", i, j, k)), 100, false)})
			}
			mid = append(mid, putDir(b, s, fmt.Sprintf("d%03d", j), leaf))
		}
		top = append(top, putDir(b, s, fmt.Sprintf("d%03d", i), mid))
	}
	root := putDir(b, s, "root", top)
	p, _ := storetest.PathInfoFor("77777777777777777777777777777777-tree", root.Node)
	if err := s.PutPathInfo(ctx, p); err != nil {
		b.Fatal(err)
	}
	return s
}

func putDir(b *testing.B, s *memory.Store, name string, es []storeclient.Entry) storeclient.Entry {
	dir, err := storeclient.NewDirectory(es...)
	if err != nil {
		b.Fatal(err)
	}
	d, err := s.PutDirectory(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	return storeclient.Entry{Name: storeclient.Name(name), Node: storeclient.DirectoryNode(d, dir.Size())}
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkWalk100k walks every node of a 100 000-node tree the way find
// does (readdir, then stat of each entry) with a directory cache of 1000,
// and reports the heap the FS holds afterwards beyond the store's own.
func BenchmarkWalk100k(b *testing.B) {
	s := treeStore(b)
	ctx := context.Background()
	var fsys *vfs.FS
	base := heapInuse()
	var nodes int
	for b.Loop() {
		fsys = newFS(b, s, vfs.Options{DirectoryCacheSize: 1000})
		root, err := fsys.Walk(ctx, "77777777777777777777777777777777-tree", false)
		if err != nil {
			b.Fatal(err)
		}
		nodes = walkAll(b, fsys, root)
	}
	after := heapInuse()
	runtime.KeepAlive(fsys)
	b.ReportMetric(float64(nodes), "nodes")
	b.ReportMetric(float64(after)/(1<<20), "heap-MiB")
	b.ReportMetric((float64(after)-float64(base))/(1<<20), "fs-heap-MiB")
}

func walkAll(b *testing.B, fsys *vfs.FS, dir vfs.Node) int {
	count := 1
	var cookie uint64
	for {
		es, err := fsys.ReadDir(context.Background(), dir, cookie, 256)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) == 0 {
			return count
		}
		for _, e := range es {
			_ = fsys.Attr(e.Node)
			if e.Node.IsDir() {
				count += walkAll(b, fsys, e.Node)
			} else {
				count++
			}
		}
		cookie = es[len(es)-1].Cookie
	}
}

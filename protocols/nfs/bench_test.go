package nfs

import (
	"fmt"
	"net"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// These benchmarks time single calls of the test client against a server
// on loopback: the record layer and vfs together.

func benchServer(b *testing.B, fsys *vfs.FS) *testClient {
	b.Helper()
	s, err := New(fsys, Options{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	c, err := dialTest(lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); s.Close(); <-done })
	return c
}

func benchFS(b *testing.B, entries int) *vfs.FS {
	b.Helper()
	s := memory.New()
	b.Cleanup(func() { s.Close() })
	ctx := b.Context()
	if err := storetest.NewFixtures().Fill(ctx, s, storetest.FillOptions{}); err != nil {
		b.Fatal(err)
	}
	d := storeclient.HashBytes(storetest.BlobA)
	es := make([]storeclient.Entry, entries)
	for i := range es {
		es[i] = storeclient.Entry{Name: storeclient.Name(fmt.Sprintf("f%06d", i)), Node: storeclient.FileNode(d, 2, false)}
	}
	dir, err := storeclient.NewDirectory(es...)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.PutDirectory(ctx, dir); err != nil {
		b.Fatal(err)
	}
	pi, err := storetest.PathInfoFor(bigDirRoot, storeclient.DirectoryNode(dir.Digest(), dir.Size()))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.PutPathInfo(ctx, pi); err != nil {
		b.Fatal(err)
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	return fsys
}

const bigDirRoot = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-big"

// BenchmarkRead reads BLOB_B (1 044 480 bytes) with one 1 MiB READ.
func BenchmarkRead(b *testing.B) {
	c := benchServer(b, benchFS(b, 1))
	fh, err := c.Handle(storetest.RootBlobB)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(storetest.BlobB)))
	for b.Loop() {
		if data, _, err := c.readFH(fh, 0, 1<<20); err != nil || len(data) != len(storetest.BlobB) {
			b.Fatalf("READ: %d bytes, %v", len(data), err)
		}
	}
}

// BenchmarkLookupGetattr looks up a name in a directory and gets the
// attributes of the result.
func BenchmarkLookupGetattr(b *testing.B) {
	c := benchServer(b, benchFS(b, 1))
	dir, err := c.Handle(storetest.RootComplicated)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		fh, _, err := c.lookup(dir, "keep")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.getattr(fh); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReaddirplus lists directories of 1 000 and 5 000 entries with
// 8 KiB READDIRPLUS replies, as libnfs asks.
func BenchmarkReaddirplus(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := benchServer(b, benchFS(b, n))
			for b.Loop() {
				es, err := c.ReadDir(bigDirRoot, 30)
				if err != nil || len(es) != n+2 {
					b.Fatalf("%d entries, %v", len(es), err)
				}
			}
		})
	}
}

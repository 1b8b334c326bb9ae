// Package storetest holds the known-answer fixtures of vectors.md and a
// conformance suite that every storeclient.Store backend runs.
package storetest

import (
	"context"
	"fmt"

	"github.com/storefs/storefs/storeclient"
)

// Blob fixtures of vectors.md.
var (
	HelloWorld = []byte("Hello World!")
	Empty      = []byte{}
	BlobA      = []byte{0x00, 0x01}
	BlobB      = makeBlobB()
)

func makeBlobB() []byte {
	b := make([]byte, 0, 255*4096)
	for i := 0; i < 4096; i++ {
		for j := 0; j < 255; j++ {
			b = append(b, byte(j))
		}
	}
	return b
}

// Fixtures are the Directories of vectors.md, built with the current size rule.
type Fixtures struct {
	DirectoryWithKeep    *storeclient.Directory
	DirectoryComplicated *storeclient.Directory
	DirectoryA           *storeclient.Directory
	DirectoryB           *storeclient.Directory
	DirectoryC           *storeclient.Directory
	DirectoryD           *storeclient.Directory
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func entry(name string, n storeclient.Node) storeclient.Entry {
	return storeclient.Entry{Name: must(storeclient.NewName(name)), Node: n}
}

func dirNode(d *storeclient.Directory) storeclient.Node {
	return storeclient.DirectoryNode(d.Digest(), d.Size())
}

// NewFixtures builds the Directory fixtures.
func NewFixtures() *Fixtures {
	f := &Fixtures{}
	emptyFile := storeclient.FileNode(storeclient.EmptyDigest, 0, false)
	f.DirectoryWithKeep = must(storeclient.NewDirectory(entry(".keep", emptyFile)))
	f.DirectoryComplicated = must(storeclient.NewDirectory(
		entry("keep", dirNode(f.DirectoryWithKeep)),
		entry(".keep", emptyFile),
		entry("aa", storeclient.SymlinkNode(must(storeclient.NewSymlinkTarget("/nix/store/somewhereelse")))),
	))
	f.DirectoryA = must(storeclient.NewDirectory())
	f.DirectoryB = must(storeclient.NewDirectory(entry("a", dirNode(f.DirectoryA))))
	f.DirectoryC = must(storeclient.NewDirectory(entry("a", dirNode(f.DirectoryA)), entry("a'", dirNode(f.DirectoryA))))
	f.DirectoryD = must(storeclient.NewDirectory(entry("a", dirNode(f.DirectoryA)), entry("b", dirNode(f.DirectoryB))))
	return f
}

// Root names of the filesystem conformance cases (vectors.md).
const (
	RootBlobA        = "00000000000000000000000000000000-test"
	RootBlobB        = "55555555555555555555555555555555-test"
	RootHelloExec    = "66666666666666666666666666666666-test"
	RootSymlinkA     = "11111111111111111111111111111111-test"
	RootSymlinkOut   = "44444444444444444444444444444444-test"
	RootWithKeep     = "22222222222222222222222222222222-test"
	RootComplicated  = "33333333333333333333333333333333-test"
	SymlinkOutTarget = "/nix/store/somewhereelse"
)

// RootNodes returns the root node of every conformance root, by name.
func (f *Fixtures) RootNodes() map[string]storeclient.Node {
	return map[string]storeclient.Node{
		RootBlobA:       storeclient.FileNode(storeclient.HashBytes(BlobA), uint64(len(BlobA)), false),
		RootBlobB:       storeclient.FileNode(storeclient.HashBytes(BlobB), uint64(len(BlobB)), false),
		RootHelloExec:   storeclient.FileNode(storeclient.HashBytes(HelloWorld), uint64(len(HelloWorld)), true),
		RootSymlinkA:    storeclient.SymlinkNode(RootBlobA),
		RootSymlinkOut:  storeclient.SymlinkNode(SymlinkOutTarget),
		RootWithKeep:    dirNode(f.DirectoryWithKeep),
		RootComplicated: dirNode(f.DirectoryComplicated),
	}
}

// PathInfoFor returns a PathInfo for a root basename and node, with
// placeholder NAR metadata.
func PathInfoFor(basename string, n storeclient.Node) (*storeclient.PathInfo, error) {
	sp, err := storeclient.ParseStorePathBasename(basename)
	if err != nil {
		return nil, err
	}
	return &storeclient.PathInfo{StorePath: sp, Node: n}, nil
}

// FillOptions leaves blobs, Directories and PathInfos out of what Fill
// stores, to build stores with missing objects. A Directory that contains a
// skipped Directory is skipped too (stores accept Directories leaves first).
type FillOptions struct {
	SkipBlobs       map[storeclient.Digest]bool
	SkipDirectories map[storeclient.Digest]bool
	SkipRoots       map[string]bool
}

// Fill writes every blob and Directory fixture and a PathInfo for every
// conformance root into s.
func (f *Fixtures) Fill(ctx context.Context, s storeclient.Store, opts FillOptions) error {
	for _, b := range [][]byte{HelloWorld, Empty, BlobA, BlobB} {
		if opts.SkipBlobs[storeclient.HashBytes(b)] {
			continue
		}
		if err := PutBlob(ctx, s, b); err != nil {
			return err
		}
	}
	skipped := make(map[storeclient.Digest]bool)
	for _, d := range []*storeclient.Directory{f.DirectoryA, f.DirectoryWithKeep, f.DirectoryComplicated, f.DirectoryB, f.DirectoryC, f.DirectoryD} {
		if opts.SkipDirectories[d.Digest()] || containsAny(d, skipped) {
			skipped[d.Digest()] = true
			continue
		}
		if _, err := s.PutDirectory(ctx, d); err != nil {
			return fmt.Errorf("put fixture directory %s: %w", d.Digest(), err)
		}
	}
	for name, n := range f.RootNodes() {
		if opts.SkipRoots[name] {
			continue
		}
		p, err := PathInfoFor(name, n)
		if err != nil {
			return err
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			return fmt.Errorf("put fixture pathinfo %s: %w", name, err)
		}
	}
	return nil
}

// PutBlob writes b into s and checks the digest the store returns.
func PutBlob(ctx context.Context, s storeclient.BlobService, b []byte) error {
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(b); err != nil {
		return err
	}
	d, err := w.Commit()
	if err != nil {
		return err
	}
	if want := storeclient.HashBytes(b); d != want {
		return fmt.Errorf("blob writer returned digest %s, want %s", d, want)
	}
	return nil
}

func containsAny(d *storeclient.Directory, set map[storeclient.Digest]bool) bool {
	for _, e := range d.Entries() {
		if e.Node.Kind() == storeclient.KindDirectory && set[e.Node.Digest()] {
			return true
		}
	}
	return false
}

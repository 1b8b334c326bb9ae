package grpcstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// server is a storefs gRPC server run for one test.
type server struct {
	lis    net.Listener
	cancel context.CancelFunc
	wait   func() error
}

// stop stops the server and waits for Serve to return.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	if err := s.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// serve runs grpcserver.Serve for store on lis until the test ends (or
// stop is called).
func serve(t *testing.T, lis net.Listener, store storeclient.Store) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- grpcserver.Serve(ctx, lis, store, grpcserver.Options{Logger: quietLogger(), ShutdownTimeout: 2 * time.Second})
	}()
	s := &server{lis: lis, cancel: cancel, wait: sync.OnceValue(func() error { return <-done })}
	t.Cleanup(func() {
		cancel()
		s.wait()
	})
	return s
}

func tcpListen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := grpcserver.Listen("127.0.0.1:0", nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func unixListen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := grpcserver.Listen("unix:"+filepath.Join(t.TempDir(), "store.sock"), nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func urlOf(lis net.Listener) string {
	if lis.Addr().Network() == "unix" {
		return "grpc+unix://" + lis.Addr().String()
	}
	return "grpc+http://" + lis.Addr().String()
}

func open(t *testing.T, rawURL string, opts grpcstore.Options) *grpcstore.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := grpcstore.Open(rawURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// transports are the listeners every round trip runs over.
var transports = []struct {
	name   string
	listen func(t *testing.T) net.Listener
}{
	{"tcp", tcpListen},
	{"unix", unixListen},
}

// packages are the URL suffixes selecting the protobuf package.
var packages = []struct {
	name  string
	query string
	want  grpcstore.Package
}{
	{"auto", "", grpcstore.PackageSnix},
	{"snix", "?package=snix", grpcstore.PackageSnix},
	{"tvix", "?package=tvix", grpcstore.PackageTvix},
}

// TestConformance runs the storeclient conformance suite through a client
// and a server over a memory store, for every transport and package.
func TestConformance(t *testing.T) {
	for _, tr := range transports {
		for _, pkg := range packages {
			t.Run(tr.name+"/"+pkg.name, func(t *testing.T) {
				storetest.TestStore(t, func(t *testing.T) storeclient.Store {
					lis := tr.listen(t)
					serve(t, lis, memory.New())
					s, err := grpcstore.Open(urlOf(lis)+pkg.query, grpcstore.Options{Logger: quietLogger(), Window: 64 << 10})
					if err != nil {
						t.Fatal(err)
					}
					return s
				})
			})
		}
	}
}

// TestRoundTrip exercises every method once per transport and package,
// including those outside the Store interface.
func TestRoundTrip(t *testing.T) {
	for _, tr := range transports {
		for _, pkg := range packages {
			t.Run(tr.name+"/"+pkg.name, func(t *testing.T) {
				ctx := t.Context()
				backend := memory.New()
				lis := tr.listen(t)
				serve(t, lis, backend)
				s := open(t, urlOf(lis)+pkg.query, grpcstore.Options{Window: 1000, CachedWindows: 2})
				f := storetest.NewFixtures()
				if err := f.Fill(ctx, s, storetest.FillOptions{}); err != nil {
					t.Fatalf("Fill through the client: %v", err)
				}
				if got := s.Package(); got != pkg.want {
					t.Errorf("Package() = %q, want %q", got, pkg.want)
				}
				// What the client wrote is in the backend.
				if _, err := backend.GetDirectory(ctx, f.DirectoryD.Digest()); err != nil {
					t.Errorf("backend lacks DIRECTORY_D: %v", err)
				}
				checkBlobReads(t, s, storetest.BlobB)

				tree, err := s.GetDirectoryTree(ctx, f.DirectoryD.Digest())
				if err != nil {
					t.Fatalf("GetDirectoryTree(D): %v", err)
				}
				var got []storeclient.Digest
				for _, d := range tree {
					got = append(got, d.Digest())
				}
				want := []storeclient.Digest{f.DirectoryD.Digest(), f.DirectoryA.Digest(), f.DirectoryB.Digest()}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("GetDirectoryTree(D) order = %v, want root then breadth-first %v", got, want)
				}

				// A tree in one Put stream, leaves first.
				leaf := mustDir(t, entry(t, "f", storeclient.FileNode(storeclient.HashBytes(storetest.BlobA), 2, false)))
				mid := mustDir(t, entry(t, "leaf", dirNode(leaf)))
				top := mustDir(t, entry(t, "mid", dirNode(mid)), entry(t, "leaf", dirNode(leaf)))
				d, err := s.PutDirectories(ctx, leaf, mid, top)
				if err != nil || d != top.Digest() {
					t.Fatalf("PutDirectories = %s, %v; want %s", d, err, top.Digest())
				}

				size, sum, err := s.CalculateNAR(ctx, dirNode(f.DirectoryComplicated))
				if err != nil {
					t.Fatalf("CalculateNAR(COMPLICATED): %v", err)
				}
				if size != 840 || hex.EncodeToString(sum[:]) != "ebd52279a8df024c9fd5718de4103bf5e760dc7f2cf49044ee7dea87ab16911a" {
					t.Errorf("CalculateNAR(COMPLICATED) = %d, %x; want the vectors.md values", size, sum)
				}
				size, sum, err = s.CalculateNAR(ctx, storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 12, false))
				if err != nil || size != 128 || sum != [sha256.Size]byte(mustHex(t, "03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040")) {
					t.Errorf("CalculateNAR(HelloWorld) = %d, %x, %v", size, sum, err)
				}
				if _, _, err := s.CalculateNAR(ctx, storeclient.FileNode(storeclient.HashBytes([]byte("absent")), 6, false)); !errors.Is(err, storeclient.ErrNotFound) {
					t.Errorf("CalculateNAR of an absent blob = %v, want ErrNotFound", err)
				}
			})
		}
	}
}

// checkBlobReads reads a blob sequentially, backwards and at random
// offsets through one reader.
func checkBlobReads(t *testing.T, s storeclient.BlobService, data []byte) {
	t.Helper()
	r, err := s.OpenBlob(t.Context(), storeclient.HashBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkReads(t, r, data)
}

// checkReads reads data through r sequentially, backwards and at random
// offsets.
func checkReads(t *testing.T, r storeclient.BlobReader, data []byte) {
	t.Helper()
	if r.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", r.Size(), len(data))
	}
	buf := make([]byte, 3000)
	check := func(off int64) {
		t.Helper()
		n, err := r.ReadAt(buf, off)
		want := data[min(int(off), len(data)):min(int(off)+len(buf), len(data))]
		if n != len(want) || !bytes.Equal(buf[:n], want) || (err != nil && !(err == io.EOF && n < len(buf))) {
			t.Fatalf("ReadAt(%d bytes, %d) = %d, %v (or wrong bytes), want %d bytes", len(buf), off, n, err, len(want))
		}
	}
	for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
		check(off)
	}
	for off := int64(len(data)) - 1; off >= 0; off -= 77777 {
		check(off)
	}
	for i := range 50 {
		check(int64((i * 104729 * 31) % len(data)))
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDir(t *testing.T, es ...storeclient.Entry) *storeclient.Directory {
	t.Helper()
	d, err := storeclient.NewDirectory(es...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func entry(t *testing.T, name string, n storeclient.Node) storeclient.Entry {
	t.Helper()
	nm, err := storeclient.NewName(name)
	if err != nil {
		t.Fatal(err)
	}
	return storeclient.Entry{Name: nm, Node: n}
}

func dirNode(d *storeclient.Directory) storeclient.Node {
	return storeclient.DirectoryNode(d.Digest(), d.Size())
}

// TestQuietSuccess checks that a successful use of a store logs nothing at
// Info or above (a successful `storefs cat` prints nothing on stderr), also
// when the package is detected.
func TestQuietSuccess(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	lis := tcpListen(t)
	serve(t, lis, backend)
	var logged bytes.Buffer
	s := open(t, urlOf(lis), grpcstore.Options{Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	checkBlobReads(t, s, storetest.BlobB)
	if s.Package() != grpcstore.PackageSnix {
		t.Fatalf("Package() = %q, want the detected snix", s.Package())
	}
	if logged.Len() > 0 {
		t.Errorf("a successful read logged at Info or above:\n%s", logged.String())
	}
}

package fuse

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// localStore returns an embedded store in a temporary directory, closed
// at the end of the test.
func localStore(t *testing.T) *local.Store {
	t.Helper()
	s, err := local.Open(t.Context(), t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bigName is the root of the 256 MiB file.
const bigName = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-big"

// putBig stores size deterministic bytes as the file root bigName and
// returns them.
func putBig(t *testing.T, s storeclient.Store, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{'f', 'u', 's', 'e'}).Read(data)
	w, err := s.NewBlobWriter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	pi, err := storetest.PathInfoFor(bigName, storeclient.FileNode(d, uint64(size), false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPathInfo(t.Context(), pi); err != nil {
		t.Fatal(err)
	}
	return data
}

// readMode is one of the three ways a file's bytes reach a reader.
type readMode struct {
	name string
	opts Options
	// noFiles hides the local store's blob files from vfs
	// (vfs.FS.LocalBlobFiles is false): no passthrough, no prefetching.
	noFiles bool
}

var readModes = []readMode{
	{name: "passthrough"},
	{name: "splice", opts: Options{NoPassthrough: true}},
	{name: "vfs", noFiles: true},
}

// vfs returns the FS over s that the mode reads through.
func (m readMode) vfs(t *testing.T, s *local.Store) *vfs.FS {
	t.Helper()
	if m.noFiles {
		return newVFS(t, noBlobFiles{s})
	}
	return newVFS(t, s)
}

// noBlobFiles passes a store's trust on but not its blob files
// (storeclient.BlobFiler) or its readahead.
type noBlobFiles struct{ storeclient.Store }

func (n noBlobFiles) TrustedLocal() bool { return storeclient.IsTrustedLocal(n.Store) }

func newVFS(t *testing.T, s storeclient.Store) *vfs.FS {
	t.Helper()
	fsys, err := vfs.New(s, vfs.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// TestConcurrentReads reads BLOB_B and a 256 MiB file from 16 goroutines
// at random offsets and lengths, through shared and private handles, in
// every read mode.
func TestConcurrentReads(t *testing.T) {
	e2etest.NeedFUSE(t)
	s := localStore(t)
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	big := putBig(t, s, 256<<20)
	for _, m := range readModes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			var logged lockedBuffer
			opts.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logged, testWriter{t}), nil))
			srv := mountFS(t, m.vfs(t, s), MountOptions{Options: opts})
			defer func() {
				// As root on a kernel that offers it, passthrough must
				// really be on (the reads above went around the daemon).
				if m.name == "passthrough" && hasSysAdmin() && srv.srv.KernelSettings().Flags64()&gofuse.CAP_PASSTHROUGH != 0 &&
					!strings.Contains(logged.String(), "passthrough on") {
					t.Errorf("passthrough is not on as root on a kernel that offers it; log:\n%s", logged.String())
				}
			}()
			for _, f := range []struct {
				name string
				want []byte
			}{{storetest.RootBlobB, storetest.BlobB}, {bigName, big}} {
				path := srv.Dir() + "/" + f.name
				shared, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				for g := range 16 {
					wg.Go(func() {
						r := shared
						if g%2 == 1 {
							own, err := os.Open(path)
							if err != nil {
								t.Error(err)
								return
							}
							defer own.Close()
							r = own
						}
						rng := rand.New(rand.NewPCG(uint64(g), 7))
						buf := make([]byte, 1<<20)
						for range 24 {
							off := rng.Int64N(int64(len(f.want)))
							p := buf[:1+rng.IntN(len(buf))]
							n, err := r.ReadAt(p, off)
							if err != nil && err != io.EOF {
								t.Errorf("%s: ReadAt(%d bytes at %d): %v", f.name, len(p), off, err)
								return
							}
							want := f.want[off:min(off+int64(len(p)), int64(len(f.want)))]
							if !bytes.Equal(p[:n], want) {
								t.Errorf("%s: ReadAt(%d bytes at %d): %d bytes, not the content", f.name, len(p), off, n)
								return
							}
						}
					})
				}
				wg.Wait()
				shared.Close()
			}
		})
	}
}

// TestClientKilledMidRead kills a reader in the middle of a 256 MiB file;
// the mount keeps serving, and the file still reads whole and right.
func TestClientKilledMidRead(t *testing.T) {
	e2etest.NeedFUSE(t)
	cat := e2etest.NeedCommand(t, "cat")
	s := localStore(t)
	big := putBig(t, s, 256<<20)
	want := sha256.Sum256(big)
	for _, m := range readModes {
		t.Run(m.name, func(t *testing.T) {
			srv := mountFS(t, m.vfs(t, s), MountOptions{Options: m.opts})
			path := srv.Dir() + "/" + bigName
			for range 3 {
				cmd := exec.CommandContext(context.Background(), cat, path)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if _, err := io.CopyN(io.Discard, out, 4<<20); err != nil {
					t.Errorf("read from cat: %v", err)
				}
				cmd.Process.Kill()
				cmd.Wait()
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatalf("open after the kill: %v", err)
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				t.Fatalf("read after the kill: %v", err)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Errorf("content after the kill differs")
			}
			if !isMounted(t, srv.Dir()) {
				t.Errorf("mount gone after a client was killed")
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openLocal opens an embedded store for writing.
func openLocal(ctx context.Context, dir string) (*local.Store, error) {
	return local.Open(ctx, dir, local.Options{NoSync: true})
}

package fuse

import (
	"bufio"
	"log/slog"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger sends log lines to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// mountFS mounts fsys on a fresh directory and unmounts it at the end of
// the test, checking that nothing is left in /proc/mounts.
func mountFS(t *testing.T, fsys *vfs.FS, opts MountOptions) *Server {
	t.Helper()
	e2etest.NeedFUSE(t)
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	dir := t.TempDir()
	srv, err := Mount(dir, fsys, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		if isMounted(t, srv.Dir()) {
			t.Errorf("%s is still in /proc/mounts after Unmount", srv.Dir())
		}
	})
	return srv
}

// isMounted reports whether dir appears in /proc/mounts.
func isMounted(t testing.TB, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && unescapeMount(fields[1]) == dir {
			return true
		}
	}
	return false
}

// TestConformance runs the whole vfstest suite through a kernel mount with
// plain os calls.
func TestConformance(t *testing.T) {
	e2etest.NeedFUSE(t)
	vfstest.Run(t, vfstest.Frontend{
		Serve: func(t *testing.T, fsys *vfs.FS) vfstest.Client {
			srv := mountFS(t, fsys, MountOptions{})
			return osClient{root: srv.Dir()}
		},
	})
}

package ninep_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLog sends log lines to the test log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startServer serves fsys on a free loopback port (or a unix socket in a
// temporary directory when network is "unix") and stops it in t.Cleanup,
// checking that Serve returned cleanly.
func startServer(t testing.TB, fsys *vfs.FS, network string, opts ninep.Options) (*ninep.Server, string) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = t.TempDir() + "/9p.sock"
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testLog(t)
	}
	srv := ninep.New(fsys, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, ninep.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, lis.Addr().String()
}

// TestConformance runs the vfstest suite through the p9 library's client
// over TCP.
func TestConformance(t *testing.T) {
	vfstest.Run(t, vfstest.Frontend{
		Serve: func(t *testing.T, fsys *vfs.FS) vfstest.Client {
			_, addr := startServer(t, fsys, "tcp", ninep.Options{})
			return dialP9(t, "tcp", addr, 1<<20)
		},
	})
}

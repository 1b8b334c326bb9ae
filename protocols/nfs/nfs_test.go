package nfs

import (
	"errors"
	"log/slog"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger sends the server's log lines to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// serveTest starts a server over fsys on a loopback port and stops it in
// t.Cleanup, checking that Serve returned ErrServerClosed.
func serveTest(t *testing.T, fsys *vfs.FS, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := New(fsys, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, lis.Addr().String()
}

// dialT connects a test client and closes it in t.Cleanup.
func dialT(t *testing.T, addr string) *testClient {
	t.Helper()
	c, err := dialTest(addr)
	if err != nil {
		t.Fatalf("mount %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConformance runs the vfstest suite through the test NFSv3 client.
func TestConformance(t *testing.T) {
	vfstest.Run(t, vfstest.Frontend{
		Serve: func(t *testing.T, fsys *vfs.FS) vfstest.Client {
			_, addr := serveTest(t, fsys, Options{})
			return dialT(t, addr)
		},
		Skip: map[string]string{"24-xattrs": "NFSv3 has no extended attributes"},
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

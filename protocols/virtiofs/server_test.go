//go:build linux

package virtiofs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// startServer starts a Server on a new socket; the returned stop closes
// it and checks Serve's result and that the socket is gone.
func startServer(t *testing.T) (*Server, *logBuffer, func()) {
	t.Helper()
	lb := &logBuffer{}
	srv := &Server{
		Socket:     filepath.Join(t.TempDir(), "vfs.sock"),
		Tag:        "test",
		FileSystem: testFS,
		Logger:     slog.New(slog.NewTextHandler(io.MultiWriter(lb, testWriter{t}), nil)),
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(srv.Socket); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket still there after Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return srv, lb, stop
}

// dial connects a fake VMM to srv.
func dial(t *testing.T, srv *Server) *frontend {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &frontend{t: t, c: c, g: newGuest(t)}
}

// TestServerSeveralVMs serves VMs at once on one socket: one that breaks
// the protocol is dropped, the others keep working, and a VM that
// disconnects makes room for the next.
func TestServerSeveralVMs(t *testing.T) {
	srv, lb, stop := startServer(t)
	good := dial(t, srv)
	bad := dial(t, srv)
	qGood := mounted(t, good, allFeatures)
	qBad := mounted(t, bad, allFeatures)

	qBad.putDesc(0, gpa(testMemSize+4096), 64, 0, 0)
	qBad.publish(0)
	qBad.kickIt(t)
	if _, err := io.ReadAll(bad.c); err != nil {
		t.Fatalf("the hostile VM's connection ended with %v, want EOF", err)
	}
	lookup(t, qGood, 1, "hello")

	// A VM leaves; the next one connects.
	good.c.Close()
	next := dial(t, srv)
	lookup(t, mounted(t, next, allFeatures), 1, "hello")

	// Close ends the session still running.
	stop()
	if _, err := io.ReadAll(next.c); err != nil {
		t.Errorf("after Close the VM's connection ended with %v, want EOF", err)
	}
	if lines := lb.lines("level=ERROR"); len(lines) != 1 || !strings.Contains(lines[0], "not in guest memory") {
		t.Errorf("want one error line about the hostile VM, got %q", lines)
	}
}

// TestServerContextCancel stops Serve through its context.
func TestServerContextCancel(t *testing.T) {
	srv := &Server{Socket: filepath.Join(t.TempDir(), "s"), FileSystem: testFS, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- srv.Serve(ctx) }()
	f := dial(t, srv)
	mounted(t, f, allFeatures)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(srv.Socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
	if _, err := io.ReadAll(f.c); err != nil {
		t.Errorf("VM connection ended with %v, want EOF", err)
	}
}

// TestServerSocketFile covers what may be at the socket's path.
func TestServerSocketFile(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("stale socket is replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		srv := &Server{Socket: path, FileSystem: testFS, Logger: quiet}
		if err := srv.Listen(); err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		srv.Close()
	})
	t.Run("live socket is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		srv := &Server{Socket: path, FileSystem: testFS, Logger: quiet}
		if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("Listen over a live socket: %v, want an in-use error", err)
		}
	})
	t.Run("regular file is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		srv := &Server{Socket: path, FileSystem: testFS, Logger: quiet}
		if err := srv.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("Serve over a regular file: %v, want a refusal", err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
			t.Errorf("the file was changed: %q, %v", b, err)
		}
	})
	t.Run("mode", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		srv := &Server{Socket: path, FileSystem: testFS, Logger: quiet, SocketMode: 0o660,
			SocketOwner: &SocketOwner{UID: os.Getuid(), GID: os.Getgid()}}
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != fs.ModeSocket {
			t.Errorf("socket mode %v, want 0660 socket", fi.Mode())
		}
	})
	t.Run("default mode", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s")
		srv := &Server{Socket: path, FileSystem: testFS, Logger: quiet}
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != DefaultSocketMode {
			t.Errorf("socket mode %v (%v), want %v", fi.Mode(), err, DefaultSocketMode)
		}
	})
	t.Run("close before serve", func(t *testing.T) {
		srv := &Server{Socket: filepath.Join(t.TempDir(), "s"), FileSystem: testFS, Logger: quiet}
		srv.Close()
		if err := srv.Serve(context.Background()); err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
		srv.Close()
	})
	t.Run("no file system", func(t *testing.T) {
		srv := &Server{Socket: filepath.Join(t.TempDir(), "s")}
		if err := srv.Serve(context.Background()); err == nil {
			t.Error("Serve without FileSystem succeeded")
		}
	})
}

// TestFreshFileSystemPerInit checks every INIT gets its own
// RawFileSystem, on one connection and across connections.
func TestFreshFileSystemPerInit(t *testing.T) {
	// The replies reach the test through guest memory, which the race
	// detector does not see: guard made explicitly.
	var mu sync.Mutex
	var made []fuse.RawFileSystem
	newFS := func() fuse.RawFileSystem {
		fs := testFS()
		mu.Lock()
		defer mu.Unlock()
		made = append(made, fs)
		return fs
	}
	f, _ := startSession(t, newFS)
	q := mounted(t, f, allFeatures)
	call(t, q, fuseReq(opDestroy, 0, nil), 16)
	fuseInit(t, q)
	mu.Lock()
	defer mu.Unlock()
	if len(made) != 2 || made[0] == made[1] {
		t.Errorf("made %d file systems for two INITs", len(made))
	}
}

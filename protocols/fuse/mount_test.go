package fuse

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

func fixtureVFS(t *testing.T) *memory.Store {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMountpointErrors checks the refusals of unusable mountpoints.
func TestMountpointErrors(t *testing.T) {
	e2etest.NeedFUSE(t)
	fsys := newVFS(t, fixtureVFS(t))
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	live := mountFS(t, fsys, MountOptions{})
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{full, "is not empty"},
		{file, "is not a directory"},
		{live.Dir(), "already a mount point"},
	} {
		srv, err := Mount(c.dir, fsys, MountOptions{Options: Options{Logger: testLogger(t)}})
		if err == nil {
			srv.Unmount()
			t.Errorf("Mount(%s) succeeded", c.dir)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Mount(%s): %v; want it to say %q", c.dir, err, c.want)
		}
	}
}

// TestExternalUnmount ends the server when the mount is unmounted from
// outside.
func TestExternalUnmount(t *testing.T) {
	e2etest.NeedFUSE(t)
	srv := mountFS(t, newVFS(t, fixtureVFS(t)), MountOptions{})
	if _, err := os.ReadFile(srv.Dir() + "/" + storetest.RootBlobA); err != nil {
		t.Fatal(err)
	}
	umount := exec.Command("fusermount3", "-u", srv.Dir())
	if _, err := exec.LookPath("fusermount3"); err != nil {
		umount = exec.Command("umount", srv.Dir())
	}
	if out, err := umount.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", umount.Args, err, out)
	}
	<-srv.Done() // the test's deadline bounds this
	if isMounted(t, srv.Dir()) {
		t.Errorf("still mounted after %v", umount.Args)
	}
}

// TestBusyUnmount unmounts while a file is open: the mount is detached
// lazily and nothing stays mounted.
func TestBusyUnmount(t *testing.T) {
	e2etest.NeedFUSE(t)
	srv := mountFS(t, newVFS(t, fixtureVFS(t)), MountOptions{})
	f, err := os.Open(srv.Dir() + "/" + storetest.RootBlobB)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := srv.Unmount(); err != nil {
		t.Fatalf("Unmount with an open file: %v", err)
	}
	if isMounted(t, srv.Dir()) {
		t.Errorf("still mounted after Unmount with an open file")
	}
	f.Close()
	<-srv.Done()
}

// buildStorefs builds cmd/storefs into a temporary directory.
func buildStorefs(t *testing.T) string {
	t.Helper()
	goBin := e2etest.NeedCommand(t, "go")
	bin := filepath.Join(t.TempDir(), "storefs")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/storefs/storefs/cmd/storefs").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemon is a `storefs mount` subprocess.
type daemon struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{} // closed when it has exited
	err    error         // its exit status, once done
}

// stop sends sig and returns the exit status.
func (d *daemon) stop(sig os.Signal) error {
	d.cmd.Process.Signal(sig)
	<-d.done
	return d.err
}

// startMount runs `storefs mount` as a subprocess and waits until the mount
// serves.
func startMount(t *testing.T, bin, store, dir string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"--store", "local:" + store, "mount"}, extra...)
	d := &daemon{cmd: exec.Command(bin, append(args, dir)...), done: make(chan struct{})}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(os.Kill)
		if isMounted(t, dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	for !isMounted(t, dir) || isStale(dir) {
		select {
		case <-d.done:
			t.Fatalf("storefs mount exited: %v: %s", d.err, d.stderr.String())
		case <-time.After(10 * time.Millisecond): // a poll, bounded by the test deadline
		}
	}
	return d
}

// TestMountCommand runs `storefs mount` end to end: mount, read, SIGTERM
// (exit 0, nothing mounted); external umount (exit 0); a daemon killed
// with SIGKILL leaves a stale mount that a new mount reports, and clears
// with --force.
func TestMountCommand(t *testing.T) {
	e2etest.NeedFUSE(t)
	bin := buildStorefs(t)
	store := t.TempDir()
	s, err := openLocal(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	dir := t.TempDir()

	t.Run("sigterm", func(t *testing.T) {
		d := startMount(t, bin, store, dir)
		if b, err := os.ReadFile(dir + "/" + storetest.RootBlobB); err != nil || !bytes.Equal(b, storetest.BlobB) {
			t.Errorf("read BLOB_B through the mount: %d bytes, %v", len(b), err)
		}
		if err := d.stop(syscall.SIGTERM); err != nil {
			t.Errorf("storefs mount after SIGTERM: %v\n%s", err, &d.stderr)
		}
		if isMounted(t, dir) {
			t.Errorf("still mounted after SIGTERM")
		}
	})
	t.Run("external-umount", func(t *testing.T) {
		d := startMount(t, bin, store, dir)
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Fatal(err)
		}
		<-d.done
		if d.err != nil {
			t.Errorf("storefs mount after umount: %v\n%s", d.err, &d.stderr)
		}
	})
	t.Run("stale", func(t *testing.T) {
		startMount(t, bin, store, dir).stop(os.Kill)
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(dir, &sfs); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("statfs of a dead mount: %v, want ENOTCONN", err)
		}
		out, err := exec.Command(bin, "--store", "local:"+store, "mount", dir).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "fusermount3 -u") || !strings.Contains(string(out), "--force") {
			t.Errorf("mount over a stale mount: %v: %s; want an error saying how to clear it", err, out)
		}
		d := startMount(t, bin, store, dir, "--force")
		if _, err := os.ReadFile(dir + "/" + storetest.RootBlobA); err != nil {
			t.Errorf("read after --force: %v", err)
		}
		if err := d.stop(syscall.SIGINT); err != nil {
			t.Errorf("storefs mount --force after SIGINT: %v\n%s", err, &d.stderr)
		}
		if isMounted(t, dir) {
			t.Errorf("still mounted after SIGINT")
		}
	})
}

package hostile_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
)

// remoteTimeout is timeouts.backend of the daemons that read a remote
// store in these tests.
const remoteTimeout = 2 * time.Second

// sentBytes is the backend's count of blob bytes sent over gRPC.
const sentBytes = "storefs_grpc_blob_sent_bytes_total"

// remoteFrontend starts a daemon that FUSE-mounts the gRPC store at addr
// and returns it with the mounted path of the store's data.bin.
func remoteFrontend(t *testing.T, s *store, addr string) (*daemon, string) {
	t.Helper()
	mnt := t.TempDir()
	d := startDaemonURL(t, "grpc+http://"+addr, map[string]string{
		"fuse":     "  - mountpoint: " + mnt + "\n",
		"timeouts": "  backend: " + remoteTimeout.String() + "\n",
		"log":      "  level: debug\n",
	})
	t.Cleanup(d.stop)
	return d, filepath.Join(mnt, s.basename, "sub", "data.bin")
}

func (d *daemon) counter(series string) int64 {
	d.t.Helper()
	v := d.metric(series)
	if v == "" {
		d.t.Fatalf("no %s in the metrics", series)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		d.t.Fatalf("%s = %q: %v", series, v, err)
	}
	return int64(f)
}

// A remote file read through a FUSE mount of a storefs gRPC store is
// right and transferred once; a backend that stops mid-file (SIGSTOP)
// fails the read with EIO within the backend timeout, with one log line
// naming the blob and the store, and reads work again once it goes on.
func TestRemoteStore(t *testing.T) {
	// Larger than what the client's stream window lets the server send
	// ahead, so that a read far into it needs the server.
	s := newStoreSized(t, 8<<20+3)
	back := startDaemon(t, s, map[string]string{"grpc": "  listen: 127.0.0.1:0\n"})
	addr := back.addrs["grpc"]
	digest := storeclient.HashBytes(s.data).String()

	t.Run("read once", func(t *testing.T) {
		_, file := remoteFrontend(t, s, addr)
		before := back.counter(sentBytes)
		got, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(got, s.data) {
			t.Fatalf("read through the mount: %d bytes, %v; want the %d bytes of data.bin", len(got), err, len(s.data))
		}
		if sent := back.counter(sentBytes) - before; sent != int64(len(s.data)) {
			t.Errorf("the backend sent %d blob bytes for a file of %d", sent, len(s.data))
		}
	})

	t.Run("stall mid-file", func(t *testing.T) {
		front, file := remoteFrontend(t, s, addr)
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// No readahead: each read asks for exactly its pages.
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 4096)
		if _, err := f.ReadAt(p, 0); err != nil || !bytes.Equal(p, s.data[:4096]) {
			t.Fatalf("first read: %v", err)
		}
		if err := back.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// The signal is delivered asynchronously: wait until the backend
		// is stopped (state T) before reading.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			stat, err := os.ReadFile("/proc/" + strconv.Itoa(back.cmd.Process.Pid) + "/stat")
			if err == nil {
				if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "T" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the backend did not stop after SIGSTOP")
			}
		}
		resumed := false
		resume := func() {
			if !resumed {
				back.cmd.Process.Signal(syscall.SIGCONT)
				resumed = true
			}
		}
		defer resume()
		off := int64(len(s.data) - 4096)
		t0 := time.Now()
		_, err = f.ReadAt(p, off)
		took := time.Since(t0)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read while the backend is stopped: %v, want EIO; the daemon's log:\n%s", err, front.stderr)
		}
		if took > remoteTimeout+1500*time.Millisecond {
			t.Errorf("read while the backend is stopped took %v; the backend timeout is %v", took, remoteTimeout)
		}
		// The daemon's stderr reaches the test through a pipe: give the
		// line a moment to arrive.
		var lines []string
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			lines = lines[:0]
			for line := range strings.Lines(front.stderr.String()) {
				if strings.Contains(line, digest) && strings.Contains(line, "level=ERROR") {
					lines = append(lines, line)
				}
			}
			if len(lines) > 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "grpc+http://"+addr) || !strings.Contains(lines[0], "level=ERROR") {
			t.Errorf("want one error line naming %s and the store, got %q", digest, lines)
		}
		resume()
		// A blob whose backend just timed out fails at once for a second
		// (the kernel retries a failed read right away).
		time.Sleep(1100 * time.Millisecond)
		if _, err := f.ReadAt(p, off); err != nil || !bytes.Equal(p, s.data[off:off+4096]) {
			t.Errorf("read after the backend went on: %v", err)
		}
	})
}

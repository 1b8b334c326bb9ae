// Package hostile_test attacks a running `storefs serve` the way a hostile
// client on loopback would: hand-made NFS and 9P messages through raw
// sockets, hundreds of silent connections, forged handles, a damaged store.
// Each case asserts a bounded answer (a reply or a closed connection within
// seconds), bounded memory of the daemon (its peak RSS), and that real
// clients (libnfs's nfs-ls and nfs-cat, diod's diodls and diodcat) are
// still served.
//
//	go test ./e2e/hostile                 # skips the real-client checks without libnfs/diod
//	STOREFS_E2E=1 go test ./e2e/hostile   # fails without them (CI)
package hostile_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// storefsBin is the storefs binary built for this package's tests.
var storefsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "storefs-hostile-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	storefsBin = filepath.Join(dir, "storefs")
	if out, err := exec.Command("go", "build", "-o", storefsBin, "../../cmd/storefs").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// store is a local store with one imported tree.
type store struct {
	dir      string
	basename string // the store path's basename: <hash>-tree
	data     []byte // tree/sub/data.bin
}

// newStore imports a small tree into a new local store.
func newStore(t *testing.T) *store {
	t.Helper()
	return newStoreSized(t, 200<<10+3)
}

// newStoreSized is newStore with a data.bin of size bytes.
func newStoreSized(t *testing.T, size int) *store {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(tree, "sub", "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "small"), []byte("small file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &store{dir: filepath.Join(dir, "store"), data: data}
	out, err := exec.Command(storefsBin, "--store", "local:"+s.dir, "import", tree).Output()
	if err != nil {
		t.Fatalf("storefs import: %v", err)
	}
	s.basename = filepath.Base(strings.TrimSpace(string(out)))
	return s
}

// daemon is a running `storefs serve`.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	addrs  map[string]string // frontend name → address, as printed
	stderr *syncBuffer
	exited chan error
}

// startDaemon runs `storefs serve` over s with NFS, 9P and metrics on free
// loopback ports, plus the YAML in extra (top-level keys; it may add to the
// timeouts, nfs or ninep sections, which are written here).
func startDaemon(t *testing.T, s *store, sections map[string]string) *daemon {
	t.Helper()
	return startDaemonURL(t, "local:"+s.dir, sections)
}

// startDaemonURL is startDaemon over the store URL storeURL.
func startDaemonURL(t *testing.T, storeURL string, sections map[string]string) *daemon {
	t.Helper()
	cfg := map[string]string{
		"store":   "  url: \"" + storeURL + "\"\n",
		"nfs":     "  listen: 127.0.0.1:0\n",
		"ninep":   "  listen: 127.0.0.1:0\n",
		"metrics": "  listen: 127.0.0.1:0\n",
	}
	for k, v := range sections {
		cfg[k] += v
	}
	yaml := "list_root: true\n"
	for k, v := range cfg {
		yaml += k + ":\n" + v
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(storefsBin, "serve", "--config", file)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	d := &daemon{t: t, cmd: cmd, addrs: map[string]string{}, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		d.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.exited
		}
	})
	timeout := time.After(30 * time.Second)
	for ready := false; !ready; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("storefs serve ended before it was ready; stderr:\n%s", d.stderr)
			}
			if line == "ready" {
				ready = true
			} else if f := strings.Fields(line); len(f) >= 2 {
				d.addrs[f[0]] = f[1]
			}
		case <-timeout:
			t.Fatalf("storefs serve not ready after 30 s; stderr:\n%s", d.stderr)
		}
	}
	go func() {
		for range lines {
		}
	}()
	return d
}

// alive fails the test if the daemon has exited.
func (d *daemon) alive() {
	d.t.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err
		d.t.Fatalf("the daemon exited (%v); stderr:\n%s", err, d.stderr)
	default:
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		d.t.Fatalf("the daemon is gone: %v; stderr:\n%s", err, d.stderr)
	}
}

// status reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func (d *daemon) status(field string) int64 {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatalf("read the daemon's status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	d.t.Fatalf("no %s in /proc/PID/status", field)
	return 0
}

// cpu returns the daemon's user+system CPU time so far.
func (d *daemon) cpu() time.Duration {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatalf("read the daemon's stat: %v", err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
}

// stop sends SIGTERM and expects exit status 0 within 15 s.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Errorf("storefs serve after SIGTERM: %v; stderr:\n%s", err, d.stderr)
		}
	case <-time.After(15 * time.Second):
		d.t.Errorf("storefs serve still running 15 s after SIGTERM; stderr:\n%s", d.stderr)
	}
}

// metric returns the value of one Prometheus series from /metrics ("" if
// absent), e.g. `storefs_connections_closed_total{protocol="nfs",reason="handshake"}`.
func (d *daemon) metric(series string) string {
	d.t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + d.addrs["metrics"] + "/metrics")
	if err != nil {
		d.t.Fatalf("GET /metrics: %v", err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		d.t.Fatalf("GET /metrics: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// syncBuffer is a bytes.Buffer for a process's stderr, read while written.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

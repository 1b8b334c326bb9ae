package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
)

// buildStorefs builds cmd/storefs into a temporary directory.
func buildStorefs(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "storefs")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/storefs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestServeProcess runs `storefs serve` as users do: a store made by
// `storefs import`, a configuration file with NFS, 9P, metrics and (where
// /dev/fuse works) a FUSE mount; the same file is read over each, with the
// same bytes and inode number; SIGTERM then ends it with status 0, nothing
// mounted and every port closed, within 5 s.
func TestServeProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the storefs binary")
	}
	bin := buildStorefs(t)
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 300<<10+7)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(tree, "sub", "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--store", "local:"+storeDir, "import", tree).Output()
	if err != nil {
		t.Fatalf("storefs import: %v", err)
	}
	base := filepath.Base(strings.TrimSpace(string(out)))
	file := base + "/sub/data.bin"

	mnt := ""
	yaml := "store:\n  url: \"local:" + storeDir + "\"\n" +
		"nfs:\n  listen: 127.0.0.1:0\n" +
		"ninep:\n  listen: 127.0.0.1:0\n" +
		"metrics:\n  listen: 127.0.0.1:0\n"
	if FUSEUsable() {
		mnt = filepath.Join(dir, "mnt")
		yaml += "fuse:\n  - mountpoint: " + mnt + "\n"
	} else {
		e2etest.Missing(t, "FUSE is not usable here; the process test needs it for the FUSE frontend")
	}
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			for range lines {
			}
			<-exited
		}
		if mnt != "" && mounted(t, mnt) {
			exec.Command("fusermount3", "-u", "-z", mnt).Run()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}()

	addrs := map[string]string{}
	for line := range lines {
		if line == "ready" {
			break
		}
		if f := strings.Fields(line); len(f) >= 2 {
			addrs[f[0]] = f[1]
		}
	}
	if _, ok := addrs["nfs"]; !ok {
		t.Fatalf("storefs serve did not print its addresses; stderr:\n%s", stderr.String())
	}
	go func() { // keep draining stdout
		for range lines {
		}
	}()

	// The inode number every frontend must show: vfs's, from `storefs
	// stat` (a second read-only opener of the store).
	out, err = exec.Command(bin, "--store", "local:"+storeDir, "stat", file).Output()
	if err != nil {
		t.Fatalf("storefs stat while serving: %v", err)
	}
	var want uint64
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "inode: "); ok {
			fmt.Sscan(rest, &want)
		}
	}
	if want == 0 {
		t.Fatalf("no inode in storefs stat's output:\n%s", out)
	}
	if got, ino := nfsRead(t, addrs["nfs"], file); !bytes.Equal(got, data) || ino != want {
		t.Errorf("nfs: %d bytes (equal %v), fileid %d; want inode %d", len(got), bytes.Equal(got, data), ino, want)
	}
	if got, ino := p9Read(t, "tcp", addrs["ninep"], file); !bytes.Equal(got, data) || ino != want {
		t.Errorf("9p: %d bytes (equal %v), qid path %d; want inode %d", len(got), bytes.Equal(got, data), ino, want)
	}
	if mnt != "" {
		if addrs["fuse"] != mnt {
			t.Errorf("fuse printed %q, want %q", addrs["fuse"], mnt)
		}
		got, err := os.ReadFile(filepath.Join(mnt, file))
		if err != nil {
			t.Fatalf("fuse: %v", err)
		}
		fi, err := os.Stat(filepath.Join(mnt, file))
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		if !bytes.Equal(got, data) || ino != want {
			t.Errorf("fuse: %d bytes (equal %v), st_ino %d; want inode %d", len(got), bytes.Equal(got, data), ino, want)
		}
	}

	// The metrics moved for every protocol.
	code, body := httpGet(t, "http://"+addrs["metrics"]+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	protos := []string{"nfs", "ninep"}
	if mnt != "" {
		protos = append(protos, "fuse")
	}
	for _, p := range protos {
		if v := scrape(body, fmt.Sprintf(`storefs_requests_total{op="open",protocol=%q}`, p)); v < 1 {
			t.Errorf("%s opens counted: %v", p, v)
		}
	}
	for _, p := range []string{"nfs", "ninep"} {
		if v := scrape(body, fmt.Sprintf(`storefs_read_bytes_total{protocol=%q}`, p)); v != float64(len(data)) {
			t.Errorf("%s bytes counted: %v, want %d", p, v, len(data))
		}
	}

	// SIGTERM: exit 0 within 5 s, nothing mounted, ports closed.
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("storefs serve exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("storefs serve still runs 5 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(t0).Round(time.Millisecond))
	for name, a := range addrs {
		if name != "fuse" && !refused(a) {
			t.Errorf("%s %s still accepts connections", name, a)
		}
	}
	if mnt != "" && mounted(t, mnt) {
		t.Errorf("%s still mounted", mnt)
	}
}

// scrape returns the value of one series in a Prometheus text exposition.
func scrape(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// TestServePrintConfig checks --print-config: the effective configuration,
// flags over environment over file.
func TestServePrintConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the storefs binary")
	}
	bin := buildStorefs(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, []byte("nfs:\n  listen: 127.0.0.1:2049\nninep:\n  listen: 127.0.0.1:564\nlog:\n  level: warn\n"), 0o644)
	cmd := exec.Command(bin, "serve", "--config", cfgFile, "--9p", "127.0.0.1:5640", "--print-config")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "STOREFS_LOG_LEVEL=debug", "STOREFS_NINEP_LISTEN=127.0.0.1:9999")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"listen: 127.0.0.1:2049", "listen: 127.0.0.1:5640", "level: debug", "fuse: []"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--print-config lacks %q:\n%s", want, out)
		}
	}

	// A bad configuration: exit 1 and one line naming the key and line.
	os.WriteFile(cfgFile, []byte("nfs:\n  listen: 127.0.0.1:2049\n  allowed_netwrks: [10.0.0.0/8]\n"), 0o644)
	cmd = exec.Command(bin, "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	msg := strings.TrimSpace(stderr.String())
	want := "storefs: config: " + cfgFile + ":3: nfs.allowed_netwrks: unknown key in nfs"
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, want) {
		t.Errorf("stderr %q, want one line starting %q", msg, want)
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/storefs/storefs/protocols/nfs"
	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// nfsServer is one NFSv3 server under measurement, read with libnfs.
type nfsServer struct {
	name string
	peer bool
	// url returns the libnfs URL of path (relative to the served tree).
	url  func(path string) string
	stop func()
}

// startStorefsNFS serves the local store in storeDir with protocols/nfs,
// in this process, on a loopback port. storePath is the tree's store path;
// URLs name files inside it.
func startStorefsNFS(ctx context.Context, env *Env, name, storeDir, storePath string, opts nfs.Options) (*nfsServer, error) {
	s, err := storeurl.Open(ctx, "local:"+storeDir, storeurl.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: env.Log})
	if err != nil {
		s.Close()
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, err
	}
	opts.Logger = env.Log
	srv, err := nfs.New(fsys, opts)
	if err != nil {
		s.Close()
		lis.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	port := lis.Addr().(*net.TCPAddr).Port
	base := filepath.Base(storePath)
	return &nfsServer{
		name: name,
		url: func(p string) string {
			return fmt.Sprintf("nfs://127.0.0.1/%s/%s?version=3&nfsport=%d&mountport=%d", base, p, port, port)
		},
		stop: func() { srv.Close(); <-done; s.Close() },
	}, nil
}

// startGanesha serves tree with nfs-ganesha 4.3 (FSAL VFS), NFSv3 over
// TCP, with the configuration of the lab report. Ganesha registers with
// rpcbind at start-up and exits without it, so rpcbind runs while it
// starts and is stopped right after.
func startGanesha(ctx context.Context, env *Env, tree string) (*nfsServer, error) {
	gbin, err := exec.LookPath("ganesha.nfsd")
	if err != nil {
		return nil, errSkip("nfs-ganesha is not installed")
	}
	rpcbind, err := exec.LookPath("rpcbind")
	if err != nil {
		return nil, errSkip("rpcbind is not installed")
	}
	dir := filepath.Join(env.Scratch, "ganesha")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	nfsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	mntPort, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`NFS_CORE_PARAM { Protocols = 3; NFS_Port = %d; MNT_Port = %d; Enable_NLM = false;
  Enable_RQUOTA = false; Enable_UDP = false; Bind_addr = 127.0.0.1; Mount_Path_Pseudo = true; }
NFSV4 { Graceless = true; }
EXPORT { Export_Id = 1; Path = %s; Pseudo = /export; Access_Type = RO; Squash = No_Root_Squash;
  Protocols = 3; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
LOG { Default_Log_Level = EVENT; }
`, nfsPort, mntPort, tree)
	confPath := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	for _, d := range []string{"/var/run/ganesha", "/var/lib/nfs/ganesha"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var rb *exec.Cmd
	if !portOpen(111) {
		rb = exec.CommandContext(ctx, rpcbind, "-f", "-w")
		if err := rb.Start(); err != nil {
			return nil, fmt.Errorf("start rpcbind: %w", err)
		}
		waitPort(111, 10*time.Second)
	}
	stopRPCBind := func() {
		if rb != nil {
			rb.Process.Signal(syscall.SIGTERM)
			rb.Wait()
			rb = nil
		}
	}
	g := exec.CommandContext(ctx, gbin, "-F", "-f", confPath, "-L", filepath.Join(dir, "ganesha.log"), "-N", "NIV_EVENT", "-p", filepath.Join(dir, "ganesha.pid"))
	if err := g.Start(); err != nil {
		stopRPCBind()
		return nil, fmt.Errorf("start ganesha: %w", err)
	}
	stopG := func() { g.Process.Signal(syscall.SIGTERM); g.Wait() }
	if !waitPort(nfsPort, 20*time.Second) || !waitPort(mntPort, 5*time.Second) {
		stopG()
		stopRPCBind()
		log, _ := os.ReadFile(filepath.Join(dir, "ganesha.log"))
		return nil, fmt.Errorf("ganesha did not listen: %s", lastLines(log, 5))
	}
	stopRPCBind()
	return &nfsServer{
		name: "nfs-ganesha 4.3 (FSAL VFS)",
		peer: true,
		url: func(p string) string {
			return fmt.Sprintf("nfs://127.0.0.1/export/%s?version=3&nfsport=%d&mountport=%d", p, nfsPort, mntPort)
		},
		stop: stopG,
	}, nil
}

// startRclone serves tree with `rclone serve nfs` (go-nfs inside) if an
// rclone binary is on PATH; building one takes minutes and gigabytes, so
// the bench never does. libnfs needs auto-traverse-mounts=0 with it.
func startRclone(ctx context.Context, tree string) (*nfsServer, error) {
	bin, err := exec.LookPath("rclone")
	if err != nil {
		return nil, errSkip("rclone is not on PATH")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "nfs", tree, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--read-only")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	if !waitPort(port, 20*time.Second) {
		stop()
		return nil, errors.New("rclone serve nfs did not listen")
	}
	return &nfsServer{
		name: "rclone serve nfs (go-nfs)",
		url: func(p string) string {
			return fmt.Sprintf("nfs://127.0.0.1/%s?version=3&nfsport=%d&mountport=%d&auto-traverse-mounts=0", p, port, port)
		},
		stop: stop,
	}, nil
}

// skipError marks a peer that is not installed: its rows say skipped.
type skipError string

func errSkip(reason string) error { return skipError(reason) }
func (e skipError) Error() string { return string(e) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func waitPort(port int, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if portOpen(port) {
			return true
		}
	}
	return false
}

func lastLines(b []byte, n int) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " | ")
}

// nfsCat runs nfs-cat URL > /dev/null and returns the bytes it wrote.
func nfsCat(ctx context.Context, url string) (int64, error) {
	cmd := exec.CommandContext(ctx, "nfs-cat", url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, err := io.CopyBuffer(io.Discard, out, make([]byte, 1<<20))
	if werr := cmd.Wait(); werr != nil {
		return n, fmt.Errorf("nfs-cat %s: %w: %s", url, werr, strings.TrimSpace(stderr.String()))
	}
	return n, err
}

// nfsCatNull runs nfs-cat URL with its output on /dev/null: no pipe into
// this process, whose copy would cap every system at the same pipe speed
// (about 1.25 s per GiB on the project machine). Callers check the byte
// count with an nfsCat of the same URL first.
func nfsCatNull(ctx context.Context, url string) error {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.CommandContext(ctx, "nfs-cat", url)
	cmd.Stdout = devnull
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nfs-cat %s: %w: %s", url, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// nfsLsR runs nfs-ls -R URL and returns the number of lines it printed.
func nfsLsR(ctx context.Context, url string) (int, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nfs-ls", "-R", url)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("nfs-ls -R %s: %w: %s", url, err, strings.TrimSpace(stderr.String()))
	}
	return bytes.Count(out, []byte("\n")), nil
}

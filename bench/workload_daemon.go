package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemonWorkload measures `storefs serve`: the time from exec to "ready"
// with the embedded store of the corpus and every frontend (FUSE where
// /dev/fuse works, NFS, 9P, virtio-fs, gRPC, metrics), and the resident memory of the
// idle daemon after that; against the time `storefs version` takes to run,
// the floor of starting the binary.
func daemonWorkload() Workload {
	return Workload{
		Name: "daemon",
		Doc:  "storefs serve: exec to ready with all frontends, and idle RSS",
		Run:  runDaemonWorkload,
	}
}

// idleSettle is how long the daemon sits idle before its RSS is read.
const idleSettle = 2 * time.Second

func runDaemonWorkload(ctx context.Context, env *Env) ([]Result, error) {
	storeDir := filepath.Join(env.Scratch, "daemon-store")
	if _, err := storefsImport(ctx, env, storeDir, env.Corpus.Root); err != nil {
		return nil, err
	}
	fuse := fuseUsable()
	// The peer: exec of the binary and exit, timed as the other workloads.
	peer := []contender{{name: "storefs version (process start)", peer: true, run: func(ctx context.Context, dir string) (string, error) {
		return "", exec.CommandContext(ctx, env.Storefs, "version").Run()
	}}}
	walls, _, err := runContenders(ctx, env, peer)
	if err != nil {
		return nil, err
	}
	// The daemon: only exec → "ready" counts, not the idle wait and the
	// stop that follow in the same run, so it times itself.
	var startups rounds
	var rss int64
	for i := 0; i < env.Runs; i++ {
		startup, r, err := serveToReady(ctx, env, storeDir, filepath.Join(env.Scratch, fmt.Sprintf("serve%d", i)), fuse)
		if err != nil {
			return nil, err
		}
		startups = append(startups, startup)
		rss = max(rss, r)
	}
	frontends := "nfs, 9p, virtiofs, grpc, metrics"
	if fuse {
		frontends = "fuse, " + frontends
	}
	return []Result{
		walls[0].result("daemon", peer[0].name, true, 0, 0),
		startups.result("daemon", fmt.Sprintf("storefs serve → ready (%s; idle RSS %.1f MiB)", frontends, float64(rss)/(1<<20)), false, 0, 0),
	}, nil
}

// serveToReady starts storefs serve over storeDir with every frontend,
// waits for "ready", lets it idle for idleSettle, reads its RSS and stops
// it with SIGTERM. It returns the time from exec to "ready" and the RSS.
func serveToReady(ctx context.Context, env *Env, storeDir, dir string, fuse bool) (time.Duration, int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	cfg := "store:\n  url: \"local:" + storeDir + "\"\n" +
		"nfs: {listen: 127.0.0.1:0}\nninep: {listen: 127.0.0.1:0}\ngrpc: {listen: 127.0.0.1:0}\nmetrics: {listen: 127.0.0.1:0}\n" +
		"virtiofs: {socket: " + filepath.Join(dir, "virtiofs.sock") + "}\n" +
		"log: {level: warn}\n"
	if fuse {
		cfg += "fuse:\n  - mountpoint: " + filepath.Join(dir, "mnt") + "\n"
	}
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, env.Storefs, "serve", "--config", cfgFile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	startup := time.Since(t0)
	if !ready {
		cmd.Wait()
		return 0, 0, errors.New("storefs serve exited before ready")
	}
	env.Log.Info("daemon ready", "startup", startup.Round(100*time.Microsecond))
	time.Sleep(idleSettle)
	rss, rerr := vmRSS(cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		return 0, 0, fmt.Errorf("storefs serve after SIGTERM: %w", err)
	}
	if rerr != nil {
		return 0, 0, rerr
	}
	return startup, rss, nil
}

// vmRSS returns the resident set size of process pid.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// fuseUsable reports whether /dev/fuse opens.
func fuseUsable() bool {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

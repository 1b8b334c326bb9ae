package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/e2e/vm"
	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/protocols/virtiofs"
	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// virtiofsWorkload measures what a Linux guest sees: one QEMU guest (TCG)
// mounts the corpus three ways at once — storefs' vhost-user-fs back-end
// (protocols/virtiofs over the FUSE frontend's RawFileSystem), QEMU 7.2's
// C virtiofsd over a read-only bind mount of the same tree (the peer), and
// storefs' 9P frontend over the guest's network — and times, in the guest,
// cat of the big file and find over the whole tree on each. Every system
// is read cold: each has its own superblock in the guest, the guest drops
// its caches before each timed check, and the guest boots fresh for each
// run; every system is warmed up once per boot, untimed, first.
func virtiofsWorkload() Workload {
	return Workload{
		Name: "virtiofs",
		Doc:  "guest (QEMU TCG) cat of the big file and find over the tree: storefs virtiofs vs QEMU virtiofsd vs storefs 9P",
		Run:  runVirtiofsWorkload,
	}
}

// virtiofsd is where Debian's qemu-system-common installs QEMU's C
// virtiofsd.
const virtiofsdPath = "/usr/lib/qemu/virtiofsd"

// benchGuestMiB is the guest's memory: enough to run, less than the big
// file, so no system reads it from the guest's page cache.
const benchGuestMiB = 768

func runVirtiofsWorkload(ctx context.Context, env *Env) ([]Result, error) {
	big := env.Corpus.BigFile
	if big == "" {
		return nil, errors.New("the corpus has no big file (--big-size 0)")
	}
	size, err := fileSize(big)
	if err != nil {
		return nil, err
	}
	const (
		wRead = "virtiofs-read (guest cat big file)"
		wFind = "virtiofs-find (guest find tree)"
	)
	systems := []struct {
		name, dir string
		peer      bool
	}{
		{"storefs virtiofs", "/mnt/sfs", false},
		{"QEMU 7.2 virtiofsd (C), ro bind mount", "/mnt/vfsd", true},
		{"storefs 9P (protocols/ninep, TCP)", "/mnt/9p", false},
	}
	skipAll := func(why string) []Result {
		var out []Result
		for _, w := range []string{wRead, wFind} {
			for _, s := range systems {
				out = append(out, Result{Workload: w, System: s.name, Peer: s.peer, Skipped: why})
			}
		}
		return out
	}
	h, err := vm.FindHost(ctx, func(f string, a ...any) { env.Log.Info(fmt.Sprintf(f, a...)) })
	if err != nil {
		return skipAll(err.Error()), nil
	}
	if _, err := os.Stat(virtiofsdPath); err != nil || os.Geteuid() != 0 {
		return skipAll("needs root and " + virtiofsdPath + " (qemu-system-common)"), nil
	}

	tree := env.Corpus.Root
	storeDir := filepath.Join(env.Scratch, "virtiofs-store")
	storePath, err := storefsImport(ctx, env, storeDir, tree)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(storePath)
	sfSock, stopSF, err := startStorefsVirtiofs(ctx, env, storeDir)
	if err != nil {
		return nil, err
	}
	defer stopSF()
	ninep, err := startStorefs9P(ctx, env, storeDir, storePath)
	if err != nil {
		return nil, err
	}
	defer ninep.stop()
	_, portStr, _ := net.SplitHostPort(ninep.addr)
	port, _ := strconv.Atoi(portStr)

	roots := []string{systems[0].dir + "/" + base, systems[1].dir, systems[2].dir + "/" + base}
	s := vm.NewScript()
	s.MountVirtiofs("mount-sfs", vm.VirtiofsMount{Tag: "storefs", Dir: systems[0].dir})
	s.MountVirtiofs("mount-vfsd", vm.VirtiofsMount{Tag: "virtiofsd", Dir: systems[1].dir})
	s.Mount9P("mount-9p", vm.NinePMount{Port: port, Aname: ninep.aname, Dir: systems[2].dir, Msize: 1 << 20})
	// Whatever a system does first after boot also pays the guest's own
	// warm-up (slab growth, first touch of its memory under TCG) and its
	// back-end's first touch of guest memory: every guest page the back-end
	// writes a reply into is mapped into that back-end's page tables on
	// first touch, which costs more than the copy on this host. Timed
	// first, storefs' cat took 6–8 s against virtiofsd's 2.7–2.9 s in the
	// same boot; timed second, 2.2 s against virtiofsd's 2.0 s — and the
	// reverse order flips it. So each system walks the tree and reads the
	// big file once, untimed, before anything is timed (the guest's page
	// cache is smaller than the big file: one cat passes all its free
	// memory through each back-end), and the guest's caches are dropped
	// before every timed check, so each system is read cold by the guest
	// with warm mappings of its memory.
	// QEMU's virtiofsd keeps an fd per inode the guest knows: dropping
	// the caches between the walks keeps it under its RLIMIT_NOFILE.
	//
	// A drop evicts every inode of a tree just walked, and the guest then
	// sends one FORGET per inode to that tree's back-end, ~7 000 of them,
	// queued behind its high-priority virtqueue and sent over the next
	// ~0.3 s. Without the pause they land in the next system's timed
	// check: the guest's CPU sends them while it walks or reads the other
	// tree (measured: 2 400 of storefs' FORGETs inside virtiofsd's find,
	// virtiofsd's inside storefs' cat).
	// The smoke corpus has a few hundred inodes and needs no pause.
	drop := "sync; echo 3 > /proc/sys/vm/drop_caches; sleep 2"
	findRounds, readRounds := virtiofsFindRounds, virtiofsReadRounds
	if env.Smoke {
		drop = "sync; echo 3 > /proc/sys/vm/drop_caches"
		findRounds, readRounds = 1, 1
	}
	for i := range systems {
		s.Check(fmt.Sprintf("warm-up-%d", i),
			findIn(roots[i])+" > /dev/null; "+drop+"; cat "+roots[i]+"/"+BigName+" > /dev/null; "+drop,
			vm.Timeout(20*time.Minute))
	}
	// Each boot times the two virtio-fs systems several times, taking
	// turns and swapping who goes first every round, so that the drift
	// of this shared host's speed (±10 % within a minute) touches both
	// alike; 9P, 25–40× slower and only compared at ≥ 3×, goes once.
	//
	// Each find runs inside the tree it walks (findIn), so every system's
	// walk handles the same relative paths.
	entries := 0
	for _, c := range interleave(len(systems), findRounds) {
		s.Check(fmt.Sprintf("drop-find-%d-%d", c.system, c.round), drop)
		s.Capture(fmt.Sprintf("find-%d-%d", c.system, c.round), findIn(roots[c.system])+" | wc -l", vm.Timeout(10*time.Minute))
	}
	for _, c := range interleave(len(systems), readRounds) {
		s.Check(fmt.Sprintf("drop-read-%d-%d", c.system, c.round), drop)
		s.Check(fmt.Sprintf("read-%d-%d", c.system, c.round), "cat "+roots[c.system]+"/"+BigName+" > /dev/null", vm.Timeout(20*time.Minute))
	}
	times := map[string]rounds{} // "find-S"/"read-S" → system S's times, all rounds of all boots
	for run := 0; run < env.Runs; run++ {
		// QEMU's virtiofsd serves one VM and exits when it leaves.
		vdSock, stopVD, err := startVirtiofsd(ctx, env, tree)
		if err != nil {
			return nil, err
		}
		args := vm.VirtiofsQEMUArgs(sfSock, "storefs", benchGuestMiB)
		args = append(args, "-chardev", "socket,id=vfsd,path="+vdSock, "-device", "vhost-user-fs-pci,chardev=vfsd,tag=virtiofsd")
		res, err := vm.Boot(ctx, h, vm.Options{MemoryMiB: benchGuestMiB, QEMUArgs: args, Timeout: time.Hour}, s,
			func(line string) { env.Log.Debug("guest", "line", line) })
		stopVD()
		if err != nil {
			return nil, fmt.Errorf("booting the guest: %w", err)
		}
		if !res.Done {
			return nil, fmt.Errorf("the guest did not finish its checks (run %d)", run+1)
		}
		for _, c := range res.Checks {
			if c.Status != vm.Pass {
				return nil, fmt.Errorf("guest check %s: %s %s %v", c.Name, c.Status, c.Detail, c.Output)
			}
			// find-S-R and read-S-R: system S's round R.
			kind, sys, round, ok := parseTimedCheck(c.Name)
			if !ok {
				continue
			}
			if kind == "find" && sys == 0 && round == 0 && len(c.Output) > 0 {
				entries, _ = strconv.Atoi(c.Output[len(c.Output)-1])
			}
			key := fmt.Sprintf("%s-%d", kind, sys)
			times[key] = append(times[key], c.Elapsed)
		}
	}
	for i := range systems {
		for _, name := range []string{fmt.Sprintf("read-%d", i), fmt.Sprintf("find-%d", i)} {
			if _, ok := times[name]; !ok {
				return nil, fmt.Errorf("the guest never reported check %s", name)
			}
		}
	}
	var out []Result
	for i, sys := range systems {
		out = append(out, times[fmt.Sprintf("read-%d", i)].result(wRead, sys.name, sys.peer, size, 1))
	}
	for i, sys := range systems {
		out = append(out, times[fmt.Sprintf("find-%d", i)].result(wFind, sys.name, sys.peer, 0, entries))
	}
	return out, nil
}

// startStorefsVirtiofs serves the local store in storeDir read-only with
// protocols/virtiofs (in this process) on a new socket.
func startStorefsVirtiofs(ctx context.Context, env *Env, storeDir string) (string, func(), error) {
	s, err := storeurl.Open(ctx, "local:"+storeDir, storeurl.Options{ReadOnly: true})
	if err != nil {
		return "", nil, err
	}
	fsys, err := vfs.New(s, vfs.Options{ListRoot: true, Logger: env.Log})
	if err != nil {
		s.Close()
		return "", nil, err
	}
	// As for a FUSE mount: reads of the embedded store's blob files go
	// straight from the file into the guest's pages (preadv; passthrough
	// needs a kernel mount and is not tried).
	opts := fuse.Options{Logger: env.Log, NoListingCache: true} // as the daemon serves virtio-fs
	srv := &virtiofs.Server{
		Socket: filepath.Join(env.Scratch, "storefs-virtiofs.sock"),
		Tag:    "storefs",
		FileSystem: func() gofuse.RawFileSystem {
			return fuse.NewRawFileSystem(fsys, opts)
		},
		Logger: env.Log,
	}
	if err := srv.Listen(); err != nil {
		s.Close()
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return srv.Socket, func() { srv.Close(); <-done; s.Close() }, nil
}

// startVirtiofsd shares a read-only bind mount of tree with QEMU's
// virtiofsd (it has no read-only option) in its default cache mode.
func startVirtiofsd(ctx context.Context, env *Env, tree string) (string, func(), error) {
	ro := filepath.Join(env.Scratch, "virtiofsd-ro")
	if err := os.MkdirAll(ro, 0o755); err != nil {
		return "", nil, err
	}
	for _, args := range [][]string{{"--bind", tree, ro}, {"-o", "remount,bind,ro", ro}} {
		if b, err := exec.CommandContext(ctx, "mount", args...).CombinedOutput(); err != nil {
			exec.Command("umount", ro).Run()
			return "", nil, fmt.Errorf("mount %v: %w: %s", args, err, b)
		}
	}
	sock := filepath.Join(env.Scratch, "virtiofsd.sock")
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, virtiofsdPath, "--socket-path="+sock, "-o", "source="+ro, "--rlimit-nofile=1048576")
	cmd.WaitDelay = 5 * time.Second
	logf, err := os.Create(filepath.Join(env.Scratch, "virtiofsd.log"))
	if err != nil {
		cancel()
		exec.Command("umount", ro).Run()
		return "", nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		exec.Command("umount", ro).Run()
		return "", nil, fmt.Errorf("starting virtiofsd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cancel()
		<-exited
		exec.Command("umount", ro).Run()
	}
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock, stop, nil
		}
		select {
		case err := <-exited:
			exited <- err
			stop()
			return "", nil, fmt.Errorf("virtiofsd exited before creating its socket: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// findIn returns the guest command that lists every entry below root
// with find, run from root itself.
//
// The guest's find is BusyBox's: it lstats every entry by its whole path
// and prints that path. Given the root as an argument, each storefs path
// starts with /mnt/sfs/<hash>-<name> (the tree is a store path in the
// mount) and each virtiofsd path with /mnt/vfsd (it shares the tree
// itself): 34 characters and one path component more per entry, walked
// and printed 7 000 times by the guest's emulated CPU. That cost storefs
// ~150 ms of guest CPU per find (1.3x virtiofsd's time, measured with
// the same server latency per request); from inside the tree the paths
// are the same ("./a/b") and only the file systems differ.
func findIn(root string) string {
	return "cd " + root + " && find ."
}

// virtiofsFindRounds and virtiofsReadRounds are how often each boot times
// each virtio-fs system's find and cat (once with --smoke). The cat takes
// four rounds: it is mostly the guest's own emulated work, which varies
// with this shared host's CPU speed by more than the back-ends differ
// (see docs/performance.md), so it needs more samples than the find.
const (
	virtiofsFindRounds = 3
	virtiofsReadRounds = 4
)

// timedCheck is one timed check of a boot: a system's round.
type timedCheck struct{ system, round int }

// interleave orders the timed checks of one boot: systems 0 and 1 (the
// virtio-fs ones) take turns for rounds rounds, 0 first in even rounds and
// 1 first in odd ones, and any further system goes once, last.
func interleave(systems, rounds int) []timedCheck {
	var out []timedCheck
	for r := range rounds {
		if r%2 == 0 {
			out = append(out, timedCheck{0, r}, timedCheck{1, r})
		} else {
			out = append(out, timedCheck{1, r}, timedCheck{0, r})
		}
	}
	for i := 2; i < systems; i++ {
		out = append(out, timedCheck{i, 0})
	}
	return out
}

// parseTimedCheck splits a timed check's name, "find-S-R" or "read-S-R".
func parseTimedCheck(name string) (kind string, system, round int, ok bool) {
	var k string
	if _, err := fmt.Sscanf(strings.ReplaceAll(name, "-", " "), "%s %d %d", &k, &system, &round); err != nil || (k != "find" && k != "read") {
		return "", 0, 0, false
	}
	return k, system, round, true
}

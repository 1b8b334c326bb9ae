package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fuseWorkload reads the corpus through kernel mounts: storefs
// (protocols/fuse over a local store holding the imported corpus, with
// passthrough and with reads spliced through the daemon) against
// squashfuse_ll over a zstd squashfs image (the FUSE peer), the kernel's
// erofs on a loop device, and the tree on local disk:
//
//   - seq read warm / cold: dd bs=1M of the big file (cold: after
//     echo 3 > /proc/sys/vm/drop_caches);
//   - tar small cold: tar c of 5,000 small files piped through cat;
//   - find -ls warm: about 7,000 entries;
//   - fio 4k randread: psync, cold, reported as the time 100,000 reads
//     take at the measured IOPS (lower is better, like every row).
//
// The peer of find is erofs, of every other row squashfuse_ll. It needs
// root (mounts, drop_caches); peers that are not installed are skipped.
func fuseWorkload() Workload {
	return Workload{
		Name: "fuse",
		Doc:  "kernel mounts: storefs FUSE (passthrough, splice) vs squashfuse_ll, erofs and local disk: seq read, tar, find -ls, fio randread",
		Run:  runFUSEWorkload,
	}
}

// fioIOs is the number of reads a fio row reports the time of.
const fioIOs = 100000

func runFUSEWorkload(ctx context.Context, env *Env) ([]Result, error) {
	skipAll := func(why string) []Result { return []Result{{Workload: "fuse", System: "all", Skipped: why}} }
	if os.Geteuid() != 0 {
		return skipAll("needs root (mounts, drop_caches)"), nil
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		return skipAll("/dev/fuse is not usable: " + err.Error()), nil
	} else {
		f.Close()
	}
	tree := env.Corpus.Root
	storeDir := filepath.Join(env.Scratch, "fuse-store")
	storePath, err := storefsImport(ctx, env, storeDir, tree)
	if err != nil {
		return nil, err
	}
	var systems []*mountedTree
	defer func() {
		for _, m := range systems {
			m.stop()
		}
	}()
	var results []Result
	starters := []struct {
		name  string
		start func() (*mountedTree, error)
	}{
		{"squashfuse_ll", func() (*mountedTree, error) { return startSquashfuse(ctx, env, tree) }},
		{"storefs (passthrough)", func() (*mountedTree, error) { return startStorefsFUSE(ctx, env, storeDir, storePath, true) }},
		{"storefs (splice)", func() (*mountedTree, error) { return startStorefsFUSE(ctx, env, storeDir, storePath, false) }},
		{"kernel erofs (loop)", func() (*mountedTree, error) { return startErofs(ctx, env, tree) }},
	}
	for _, st := range starters {
		m, err := st.start()
		var skip skipError
		if errors.As(err, &skip) {
			results = append(results, Result{Workload: "fuse", System: st.name, Skipped: string(skip)})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		systems = append(systems, m)
	}
	systems = append(systems, &mountedTree{name: "local disk (ext4)", root: tree, stop: func() {}})

	isPeer := func(workload, system string) bool {
		if workload == "fuse find -ls warm" {
			return strings.HasPrefix(system, "kernel erofs")
		}
		return strings.HasPrefix(system, "squashfuse_ll")
	}
	add := func(workload string, walls []rounds, bytes int64, files int) {
		for i, m := range systems {
			results = append(results, walls[i].result(workload, m.name, isPeer(workload, m.name), bytes, files))
		}
	}

	if big := env.Corpus.BigFile; big != "" {
		size, err := fileSize(big)
		if err != nil {
			return nil, err
		}
		dd := func(ctx context.Context, m *mountedTree) error {
			return runQuiet(ctx, "", "dd", "if="+filepath.Join(m.root, BigName), "of=/dev/null", "bs=1M", "status=none")
		}
		for _, cold := range []bool{false, true} {
			walls, err := timeMounted(ctx, env, systems, cold, dd)
			if err != nil {
				return nil, err
			}
			add("fuse seq read "+warmCold(cold), walls, size, 1)
		}
		if _, err := exec.LookPath("fio"); err != nil {
			results = append(results, Result{Workload: "fuse fio 4k randread", System: "all", Skipped: "fio is not installed"})
		} else {
			walls := make([]rounds, len(systems))
			for i, m := range systems {
				iops, err := fioRandRead(ctx, env, filepath.Join(m.root, BigName))
				if err != nil {
					return nil, fmt.Errorf("%s: fio: %w", m.name, err)
				}
				walls[i] = rounds{time.Duration(float64(fioIOs) / iops * float64(time.Second))}
				env.Log.Info("fio randread", "system", m.name, "iops", int(iops))
			}
			add("fuse fio 4k randread cold (100k IOs)", walls, fioIOs*4096, fioIOs)
		}
	}

	dirs, files, err := smallDirs(tree, 5000)
	if err != nil {
		return nil, err
	}
	tarCmd := "tar -cf - " + strings.Join(dirs, " ") + " | cat > /dev/null"
	walls, err := timeMounted(ctx, env, systems, true, func(ctx context.Context, m *mountedTree) error {
		return runQuiet(ctx, m.root, "bash", "-o", "pipefail", "-c", tarCmd)
	})
	if err != nil {
		return nil, err
	}
	add(fmt.Sprintf("fuse tar %d small files cold", files), walls, 0, files)

	dirs, files, err = smallDirs(tree, 6900)
	if err != nil {
		return nil, err
	}
	entries := files + len(dirs)
	walls, err = timeMounted(ctx, env, systems, false, func(ctx context.Context, m *mountedTree) error {
		return runQuiet(ctx, m.root, "find", append(dirs, "-ls")...)
	})
	if err != nil {
		return nil, err
	}
	add("fuse find -ls warm", walls, 0, entries)
	return results, nil
}

func warmCold(cold bool) string {
	if cold {
		return "cold"
	}
	return "warm"
}

// timeMounted runs fn on every system env.Runs times, interleaved, and
// returns each one's times. Cold runs drop the kernel's caches
// first (untimed); warm runs are preceded by one untimed run.
func timeMounted(ctx context.Context, env *Env, systems []*mountedTree, cold bool, fn func(context.Context, *mountedTree) error) ([]rounds, error) {
	walls := make([]rounds, len(systems))
	if !cold {
		for _, m := range systems {
			if err := fn(ctx, m); err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	for range env.Runs {
		for i, m := range systems {
			if cold {
				if err := dropCaches(); err != nil {
					return nil, fmt.Errorf("drop caches: %w", err)
				}
			}
			t0 := time.Now()
			if err := fn(ctx, m); err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			walls[i] = append(walls[i], time.Since(t0))
		}
	}
	return walls, nil
}

// smallDirs returns the corpus's small-file directories (relative to the
// tree) holding at least n files in all, or all of them, and the count.
func smallDirs(tree string, n int) ([]string, int, error) {
	tops, err := os.ReadDir(tree)
	if err != nil {
		return nil, 0, err
	}
	var dirs []string
	files := 0
	for _, top := range tops {
		if !top.IsDir() {
			continue
		}
		subs, err := os.ReadDir(filepath.Join(tree, top.Name()))
		if err != nil {
			return nil, 0, err
		}
		for _, sub := range subs {
			if files >= n {
				return dirs, files, nil
			}
			es, err := os.ReadDir(filepath.Join(tree, top.Name(), sub.Name()))
			if err != nil {
				return nil, 0, err
			}
			dirs = append(dirs, filepath.Join(top.Name(), sub.Name()))
			files += len(es)
		}
	}
	return dirs, files, nil
}

// runQuiet runs a command in dir with its output discarded.
func runQuiet(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// fioRandRead runs fio 4k random reads (psync, one job) on a cold cache
// and returns the IOPS.
func fioRandRead(ctx context.Context, env *Env, file string) (float64, error) {
	runtime := "5"
	if env.Smoke {
		runtime = "1"
	}
	if err := dropCaches(); err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "fio", "--name=rand", "--filename="+file, "--readonly", "--rw=randread", "--bs=4k",
		"--ioengine=psync", "--time_based", "--runtime="+runtime, "--output-format=terse").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	// terse v3: field 8 (1-based) is the read IOPS.
	fs := strings.Split(strings.TrimSpace(string(out)), ";")
	if len(fs) < 8 {
		return 0, fmt.Errorf("unexpected fio output %q", out)
	}
	iops, err := strconv.ParseFloat(fs[7], 64)
	if err != nil || iops <= 0 {
		return 0, fmt.Errorf("fio IOPS %q: %v", fs[7], err)
	}
	return iops, nil
}

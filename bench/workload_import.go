package main

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// importWorkload adds the whole corpus to a fresh store: storefs import
// into a new local store against nix-store --add into a new chroot Nix
// store. All must print the same store path.
func importWorkload() Workload {
	return Workload{
		Name: "import",
		Doc:  "add the corpus tree to a fresh store",
		Run:  runImportWorkload,
	}
}

func runImportWorkload(ctx context.Context, env *Env) ([]Result, error) {
	tree := env.Corpus.Root
	base := Result{Workload: "import", Bytes: env.Corpus.Bytes, Files: env.Corpus.Files}
	var cs []contender
	var results []Result
	nix := base
	nix.System, nix.Peer = "nix-store --add (Nix 2.8, chroot store)", true
	if why := nixAvailable(); why != "" {
		nix.Skipped = why
	} else {
		cs = append(cs, contender{name: nix.System, peer: true, run: func(ctx context.Context, dir string) (string, error) {
			return nixAdd(ctx, dir, tree)
		}})
	}
	cs = append(cs,
		contender{name: "storefs import (local store)", run: func(ctx context.Context, dir string) (string, error) {
			return storefsImport(ctx, env, dir, tree)
		}},
		contender{name: "storefs importer in process (local store, NoSync)", run: func(ctx context.Context, dir string) (string, error) {
			return storefsImportInProcess(ctx, dir, tree)
		}},
	)
	cpu := make([]cpuTimes, len(cs))
	for i := range cs {
		cs[i].run = cpu[i].measure(cs[i].run)
	}
	walls, paths, err := runContenders(ctx, env, cs)
	if err != nil {
		return nil, err
	}
	for i, c := range cs {
		env.Log.Info("import cpu", "system", c.name, "best_wall", walls[i].best().Round(time.Millisecond),
			"min_user", cpu[i].minUser.Round(time.Millisecond), "min_sys", cpu[i].minSys.Round(time.Millisecond),
			"min_cpu", cpu[i].minTotal.Round(time.Millisecond))
	}
	if nix.Skipped != "" {
		results = append(results, nix)
	}
	for i, c := range cs {
		r := base
		r.System, r.Peer, r.Wall, r.Median = c.name, c.peer, walls[i].best(), walls[i].median()
		results = append(results, r)
		if paths[i] != paths[0] {
			return nil, fmt.Errorf("store paths differ: %s prints %s, %s prints %s", cs[0].name, paths[0], c.name, paths[i])
		}
	}
	env.Log.Info("import", "store_path", paths[0])
	return results, nil
}

// cpuTimes records the CPU time (user and system) of a contender's runs:
// of this process and of the child processes that ended during the run
// (getrusage(2) RUSAGE_SELF and RUSAGE_CHILDREN), so it counts both a
// command such as nix-store and an importer running in this process. CPU
// time is less disturbed than wall time by other work on the machine.
type cpuTimes struct {
	minUser, minSys, minTotal time.Duration
}

// measure wraps run so that each call records its CPU time; the run with
// the least is kept.
func (c *cpuTimes) measure(run func(ctx context.Context, dir string) (string, error)) func(ctx context.Context, dir string) (string, error) {
	return func(ctx context.Context, dir string) (string, error) {
		u0, s0 := cpuUsage()
		out, err := run(ctx, dir)
		u1, s1 := cpuUsage()
		user, sys := u1-u0, s1-s0
		if c.minTotal == 0 || user+sys < c.minTotal {
			c.minUser, c.minSys, c.minTotal = user, sys, user+sys
		}
		return out, err
	}
}

// cpuUsage returns the user and system CPU time of this process and its
// waited-for children so far.
func cpuUsage() (user, sys time.Duration) {
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			continue
		}
		user += time.Duration(ru.Utime.Nano())
		sys += time.Duration(ru.Stime.Nano())
	}
	return user, sys
}

package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
)

// ninepWalkEntries is how many entries the 9p-walk workload visits: the
// size of the lab's kernel-guest walk (about 7 000 entries).
const ninepWalkEntries = 7000

// ninepWorkload measures 9P2000.L: storefs (protocols/ninep, in this
// process, over a local store holding the imported corpus) against diod
// 1.0.24 exporting the same tree from disk (the peer; its msize is at most
// 64 KiB). Clients: diodcat and the Go p9 client. Rows:
//
//   - 9p-read 64K: the big file at msize 64 KiB (peer: diodcat from diod);
//   - 9p-read 1M: the big file at msize 1 MiB (peer: diod's best row,
//     which diod serves at 64 KiB whatever the client asks);
//   - 9p-walk: Twalk+Tgetattr of the first 7 000 entries of the tree, with
//     Treaddir per directory, by the Go p9 client (peer: diod);
//   - 9p-walk tree: the same walk of every entry of the tree (the issue's
//     target: at most diod's time).
//
// The corpus is in the page cache and every system reads once untimed
// before its timed runs. Peers and tools that are not installed are
// skipped.
func ninepWorkload() Workload {
	return Workload{
		Name: "9p",
		Doc:  "9P2000.L: big-file reads at msize 64 KiB and 1 MiB, walk+getattr of 7 000 entries and of the whole tree; storefs vs diod",
		Run:  runNinepWorkload,
	}
}

func runNinepWorkload(ctx context.Context, env *Env) ([]Result, error) {
	big := env.Corpus.BigFile
	if big == "" {
		return nil, errors.New("the corpus has no big file (--big-size 0)")
	}
	size, err := fileSize(big)
	if err != nil {
		return nil, err
	}
	tree := env.Corpus.Root
	storeDir := filepath.Join(env.Scratch, "9p-store")
	storePath, err := storefsImport(ctx, env, storeDir, tree)
	if err != nil {
		return nil, err
	}
	sf, err := startStorefs9P(ctx, env, storeDir, storePath)
	if err != nil {
		return nil, err
	}
	defer sf.stop()
	diod, err := startDiod(ctx, env, tree)
	var skip skipError
	diodSkipped := ""
	if errors.As(err, &skip) {
		diodSkipped = string(skip)
	} else if err != nil {
		return nil, err
	} else {
		defer diod.stop()
	}
	_, diodcatErr := exec.LookPath("diodcat")

	type row struct {
		workload, system string
		peer             bool
		server           *ninepServer
		skipped          string
		run              func() (int64, error)
		bytes            int64
		files            int
	}
	cat := func(s *ninepServer, msize int) func() (int64, error) {
		return func() (int64, error) { return diodcat(ctx, s, msize, BigName) }
	}
	gocat := func(s *ninepServer, msize uint32) func() (int64, error) {
		return func() (int64, error) { return p9Cat(s, msize, BigName) }
	}
	walkN := func(s *ninepServer, limit int) func() (int64, error) {
		return func() (int64, error) {
			n, err := p9Walk(s, 1<<16, "", limit)
			return int64(n), err
		}
	}
	walk := func(s *ninepServer) func() (int64, error) { return walkN(s, ninepWalkEntries) }
	walkAll := func(s *ninepServer) func() (int64, error) { return walkN(s, math.MaxInt) }
	catSkip := ""
	if diodcatErr != nil {
		catSkip = "diodcat is not installed"
	}
	or := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	rows := []row{
		{"9p-read 64K", "diod ← diodcat -m 64K", true, diod, or(diodSkipped, catSkip), cat(diod, 1<<16), size, 1},
		{"9p-read 64K", "diod ← Go p9 client, msize 64K", false, diod, diodSkipped, gocat(diod, 1<<16), size, 1},
		{"9p-read 64K", "storefs ← diodcat -m 64K", false, sf, catSkip, cat(sf, 1<<16), size, 1},
		{"9p-read 64K", "storefs ← Go p9 client, msize 64K", false, sf, "", gocat(sf, 1<<16), size, 1},
		{"9p-read 1M", "diod ← diodcat -m 1M (diod grants 64K)", false, diod, or(diodSkipped, catSkip), cat(diod, 1<<20), size, 1},
		{"9p-read 1M", "diod ← Go p9 client, msize 1M (granted 64K)", false, diod, diodSkipped, gocat(diod, 1<<20), size, 1},
		{"9p-read 1M", "storefs ← diodcat -m 1M", false, sf, catSkip, cat(sf, 1<<20), size, 1},
		{"9p-read 1M", "storefs ← Go p9 client, msize 1M", false, sf, "", gocat(sf, 1<<20), size, 1},
		{"9p-walk", "diod ← Go p9 client walk+getattr", true, diod, diodSkipped, walk(diod), 0, ninepWalkEntries},
		{"9p-walk", "storefs ← Go p9 client walk+getattr", false, sf, "", walk(sf), 0, ninepWalkEntries},
		{"9p-walk tree", "diod ← Go p9 client walk+getattr, every entry", true, diod, diodSkipped, walkAll(diod), 0, 0},
		{"9p-walk tree", "storefs ← Go p9 client walk+getattr, every entry", false, sf, "", walkAll(sf), 0, 0},
	}
	var cs []contender
	var idx []int
	results := make([]Result, len(rows))
	for i, r := range rows {
		results[i] = Result{Workload: r.workload, System: r.system, Peer: r.peer, Bytes: r.bytes, Files: r.files, Skipped: r.skipped}
		if r.skipped != "" {
			continue
		}
		n, err := r.run() // untimed warm-up
		if err != nil {
			return nil, err
		}
		if r.bytes == 0 {
			results[i].Files = int(n) // entries walked (fewer than 7 000 in a small corpus)
		}
		cs = append(cs, contender{name: r.system, peer: r.peer, run: func(context.Context, string) (string, error) {
			n, err := r.run()
			if err == nil && r.bytes > 0 && n != r.bytes {
				err = fmt.Errorf("read %d bytes of %d", n, r.bytes)
			}
			return fmt.Sprint(n), err
		}})
		idx = append(idx, i)
	}
	walls, _, err := runContenders(ctx, env, cs)
	if err != nil {
		return nil, err
	}
	for k, i := range idx {
		results[i].Wall, results[i].Median = walls[k].best(), walls[k].median()
	}
	// At 1 MiB the peer is diod's best: the faster of its two rows.
	best := -1
	for i, r := range results {
		if r.Workload == "9p-read 1M" && r.Skipped == "" && r.System[:4] == "diod" && (best < 0 || r.Wall < results[best].Wall) {
			best = i
		}
	}
	if best >= 0 {
		results[best].Peer = true
	}
	return results, nil
}

// Command bench is the storefs benchmark harness: one command that builds a
// deterministic corpus, runs every selected workload on storefs and on the
// peer system it is measured against, in the same run, and prints a
// markdown table of wall time, throughput and the ratio to the peer.
//
//	go run ./bench [--smoke] [--workloads import,blobread] [--runs N] [--dir DIR]
//
// A workload (workload_*.go) says what is measured; a driver (driver_*.go)
// runs one system. Later workloads (FUSE, NFS, 9P reads) and drivers are
// new files registered in allWorkloads.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Env is what every workload gets: the corpus, a scratch directory and the
// storefs binary under test.
type Env struct {
	Corpus  CorpusStats
	Scratch string // a fresh directory for stores; removed after the run
	Storefs string // the storefs binary built from this tree
	Runs    int    // timed repetitions per system; the fastest counts
	Smoke   bool
	Log     *slog.Logger
}

// Result is one row of the table: one system on one workload.
type Result struct {
	Workload string
	System   string
	Peer     bool // the reference the workload's other systems are compared with
	Wall     time.Duration
	Bytes    int64 // payload bytes processed
	Files    int   // files processed
	Skipped  string
}

// Workload measures one thing on several systems.
type Workload struct {
	Name string
	Doc  string
	Run  func(ctx context.Context, env *Env) ([]Result, error)
}

// allWorkloads lists every workload in the order they run.
func allWorkloads() []Workload {
	return []Workload{importWorkload(), blobReadWorkload(), nfsWorkload(), binaryCacheWorkload(), ninepWorkload(), fuseWorkload(), daemonWorkload(), virtiofsWorkload()}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		smoke     = flag.Bool("smoke", false, "use the tiny corpus (CI: checks that every driver works)")
		names     = flag.String("workloads", "", "comma-separated workloads to run (default: all)")
		runs      = flag.Int("runs", 1, "timed runs per system; the fastest is reported")
		dir       = flag.String("dir", "", "directory for the corpus and stores (default: a new one in $TMPDIR, removed at the end)")
		smallN    = flag.Int("small-files", -1, "number of small files (default: 20000, smoke 300)")
		bigSize   = flag.Int64("big-size", -1, "size of the big file in bytes (default: 1 GiB, smoke 8 MiB)")
		verbosity = flag.String("log-level", "info", "log level")
	)
	flag.Parse()
	var level slog.Level
	if err := level.UnmarshalText([]byte(*verbosity)); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var selected []Workload
	for _, w := range allWorkloads() {
		if *names == "" || slices.Contains(strings.Split(*names, ","), w.Name) {
			selected = append(selected, w)
		}
	}
	if len(selected) == 0 {
		return fmt.Errorf("no workload matches %q", *names)
	}
	corpus := DefaultCorpus
	if *smoke {
		corpus = SmokeCorpus
	}
	if *smallN >= 0 {
		corpus.SmallFiles = *smallN
	}
	if *bigSize >= 0 {
		corpus.BigSize = *bigSize
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work := *dir
	if work == "" {
		d, err := os.MkdirTemp("", "storefs-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}

	env := &Env{Runs: max(*runs, 1), Smoke: *smoke, Log: log, Scratch: filepath.Join(work, "scratch")}
	bin, err := buildStorefs(ctx, work)
	if err != nil {
		return err
	}
	env.Storefs = bin
	log.Info("generating corpus", "small_files", corpus.SmallFiles, "big_size", corpus.BigSize, "dir", work)
	t0 := time.Now()
	if err := os.RemoveAll(filepath.Join(work, "tree")); err != nil {
		return err
	}
	st, err := corpus.Generate(work)
	if err != nil {
		return err
	}
	env.Corpus = st
	log.Info("corpus ready", "files", st.Files, "bytes", st.Bytes, "took", time.Since(t0).Round(time.Millisecond))
	// Both systems read the corpus from the page cache.
	if err := warmCache(st.Root); err != nil {
		return err
	}

	var all []Result
	for _, w := range selected {
		if err := os.MkdirAll(env.Scratch, 0o755); err != nil {
			return err
		}
		log.Info("workload", "name", w.Name)
		rs, err := w.Run(ctx, env)
		os.RemoveAll(env.Scratch)
		if err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
		all = append(all, rs...)
	}
	fmt.Printf("corpus: %d files, %s (%d small files of %s-%s, big file %s); %d run(s) each, fastest shown\n\n",
		st.Files, formatBytes(st.Bytes), corpus.SmallFiles, formatBytes(int64(corpus.MinSize)), formatBytes(int64(corpus.MaxSize)),
		formatBytes(corpus.BigSize), env.Runs)
	printTable(os.Stdout, all)
	return nil
}

// buildStorefs builds cmd/storefs of this module into dir.
func buildStorefs(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run bench inside the storefs module (go run ./bench)")
	}
	bin := filepath.Join(dir, "storefs")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/storefs")
	cmd.Dir = filepath.Dir(mod)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build storefs: %w", err)
	}
	return bin, nil
}

// warmCache reads every file of the tree once.
func warmCache(root string) error {
	buf := make([]byte, 1<<20)
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyBuffer(io.Discard, f, buf)
		return err
	})
}

// contender is one system of a workload: run does the timed work once,
// writing any store it creates under dir (a new directory per run), and
// returns a result to compare across systems (such as a store path).
type contender struct {
	name string
	peer bool
	run  func(ctx context.Context, dir string) (string, error)
}

// runContenders runs every contender env.Runs times, interleaved (one run
// of each, then the next round) so that slow drift of the machine touches
// all of them alike, and returns each one's fastest wall time and last
// output. Before each run it calls sync(2), untimed, so that writeback of
// earlier runs does not land in this run's time. Stores are deleted only
// after all runs: ext4 makes inode allocation slower for minutes after a
// mass delete, which would penalise whichever system runs next.
func runContenders(ctx context.Context, env *Env, cs []contender) ([]time.Duration, []string, error) {
	best := make([]time.Duration, len(cs))
	outs := make([]string, len(cs))
	for i := 0; i < env.Runs; i++ {
		for j, c := range cs {
			dir := filepath.Join(env.Scratch, fmt.Sprintf("run%d-sys%d", i, j))
			syscall.Sync()
			t0 := time.Now()
			out, err := c.run(ctx, dir)
			d := time.Since(t0)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", c.name, err)
			}
			env.Log.Debug("run", "system", c.name, "round", i, "wall", d)
			if best[j] == 0 || d < best[j] {
				best[j] = d
			}
			outs[j] = out
		}
	}
	return best, outs, nil
}

func printTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| workload | system | wall time | MB/s | files/s | time vs peer |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	peers := map[string]time.Duration{}
	for _, r := range rs {
		if r.Peer && r.Skipped == "" {
			peers[r.Workload] = r.Wall
		}
	}
	for _, r := range rs {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %s | skipped: %s | | | |\n", r.Workload, r.System, r.Skipped)
			continue
		}
		secs := r.Wall.Seconds()
		mbs, fps := "", ""
		if r.Bytes > 0 {
			mbs = fmt.Sprintf("%.0f", float64(r.Bytes)/1e6/secs)
		}
		if r.Files > 0 {
			fps = fmt.Sprintf("%.0f", float64(r.Files)/secs)
		}
		ratio := ""
		if r.Peer {
			ratio = "1.00 (peer)"
		} else if p, ok := peers[r.Workload]; ok {
			ratio = fmt.Sprintf("%.2f×", r.Wall.Seconds()/p.Seconds())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Workload, r.System, r.Wall.Round(time.Millisecond), mbs, fps, ratio)
	}
}

// formatBytes formats n with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

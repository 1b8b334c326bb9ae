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
	Runs    int    // timed repetitions per system; the fastest and the median are reported
	Smoke   bool
	Log     *slog.Logger
}

// Result is one row of the table: one system on one workload.
type Result struct {
	Workload string
	System   string
	Peer     bool          // the reference the workload's other systems are compared with
	Wall     time.Duration // the fastest run
	Median   time.Duration // the median run; 0 when only one run was timed
	Bytes    int64         // payload bytes processed
	Files    int           // files processed
	Skipped  string
	Note     string // what the columns cannot hold (a target, a counter); adds a note column
}

// Workload measures one thing on several systems.
type Workload struct {
	Name string
	Doc  string
	Run  func(ctx context.Context, env *Env) ([]Result, error)
}

// allWorkloads lists every workload in the order they run.
func allWorkloads() []Workload {
	return []Workload{importWorkload(), blobReadWorkload(), nfsWorkload(), binaryCacheWorkload(), ninepWorkload(), fuseWorkload(), daemonWorkload(), virtiofsWorkload(), remoteWorkload()}
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
		runs      = flag.Int("runs", 1, "timed runs per system; the fastest (and, from 2 runs, the median) is reported")
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
	fmt.Printf("corpus: %d files, %s (%d small files of %s-%s, big file %s); %d run(s) each, fastest shown%s\n\n",
		st.Files, formatBytes(st.Bytes), corpus.SmallFiles, formatBytes(int64(corpus.MinSize)), formatBytes(int64(corpus.MaxSize)),
		formatBytes(corpus.BigSize), env.Runs, medianNote(env.Runs))
	printTable(os.Stdout, all)
	return nil
}

// medianNote completes the table's caption when runs were repeated.
func medianNote(runs int) string {
	if runs < 2 {
		return ""
	}
	return ", and the median"
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

// rounds holds one system's wall times, one per timed run.
type rounds []time.Duration

// best returns the fastest run.
func (r rounds) best() time.Duration { return slices.Min(r) }

// median returns the median run (the mean of the middle two for an even
// count), or 0 for a single run, which has no median worth printing.
func (r rounds) median() time.Duration {
	if len(r) < 2 {
		return 0
	}
	s := slices.Clone(r)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// result is the row of one system's rounds on a workload.
func (r rounds) result(workload, system string, peer bool, bytes int64, files int) Result {
	return Result{Workload: workload, System: system, Peer: peer, Wall: r.best(), Median: r.median(), Bytes: bytes, Files: files}
}

// runContenders runs every contender env.Runs times, interleaved (one run
// of each, then the next round) so that slow drift of the machine touches
// all of them alike, and returns each one's wall times and last output.
// Before each run it calls sync(2), untimed, so that writeback of earlier
// runs does not land in this run's time. Stores are deleted only
// after all runs: ext4 makes inode allocation slower for minutes after a
// mass delete, which would penalise whichever system runs next.
func runContenders(ctx context.Context, env *Env, cs []contender) ([]rounds, []string, error) {
	walls := make([]rounds, len(cs))
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
			walls[j] = append(walls[j], d)
			outs[j] = out
		}
	}
	return walls, outs, nil
}

// printTable prints the results as a markdown table. The wall time, rates
// and ratio are of each system's fastest run; when runs were repeated, two
// more columns give the median run and its ratio to the peer's median, so
// that a workload whose runs scatter (or fall into two modes) shows it.
func printTable(w io.Writer, rs []Result) {
	medians := slices.ContainsFunc(rs, func(r Result) bool { return r.Median > 0 })
	header, rule := "| workload | system | wall time | MB/s | files/s | time vs peer |", "|---|---|---:|---:|---:|---:|"
	if medians {
		header += " median | median vs peer |"
		rule += "---:|---:|"
	}
	notes := slices.ContainsFunc(rs, func(r Result) bool { return r.Note != "" })
	if notes {
		header += " note |"
		rule += "---|"
	}
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, rule)
	peers := map[string]Result{}
	for _, r := range rs {
		if r.Peer && r.Skipped == "" {
			peers[r.Workload] = r
		}
	}
	ratio := func(r Result, d, peer time.Duration) string {
		switch {
		case d == 0:
			return ""
		case r.Peer:
			return "1.00 (peer)"
		case peer > 0:
			return fmt.Sprintf("%.2f×", d.Seconds()/peer.Seconds())
		}
		return ""
	}
	for _, r := range rs {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %s | skipped: %s | | | |", r.Workload, r.System, r.Skipped)
			if medians {
				fmt.Fprint(w, " | |")
			}
			if notes {
				fmt.Fprintf(w, " %s |", r.Note)
			}
			fmt.Fprintln(w)
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
		peer := peers[r.Workload]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |", r.Workload, r.System, r.Wall.Round(time.Millisecond), mbs, fps, ratio(r, r.Wall, peer.Wall))
		if medians {
			med := ""
			if r.Median > 0 {
				med = r.Median.Round(time.Millisecond).String()
			}
			fmt.Fprintf(w, " %s | %s |", med, ratio(r, r.Median, peer.Median))
		}
		if notes {
			fmt.Fprintf(w, " %s |", r.Note)
		}
		fmt.Fprintln(w)
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

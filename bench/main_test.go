package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoundsBestAndMedian(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		r            rounds
		best, median time.Duration
	}{
		{rounds{5 * ms}, 5 * ms, 0},
		{rounds{9 * ms, 3 * ms}, 3 * ms, 6 * ms},
		{rounds{700 * ms, 360 * ms, 650 * ms}, 360 * ms, 650 * ms},
		{rounds{4 * ms, 1 * ms, 3 * ms, 2 * ms}, 1 * ms, 2500 * time.Microsecond},
	} {
		if got := tc.r.best(); got != tc.best {
			t.Errorf("%v.best() = %v, want %v", tc.r, got, tc.best)
		}
		if got := tc.r.median(); got != tc.median {
			t.Errorf("%v.median() = %v, want %v", tc.r, got, tc.median)
		}
	}
	// median must not reorder the caller's rounds.
	r := rounds{3, 1, 2}
	r.median()
	if r[0] != 3 || r[1] != 1 || r[2] != 2 {
		t.Errorf("median reordered its receiver: %v", r)
	}
}

func TestPrintTableMedianColumns(t *testing.T) {
	ms := time.Millisecond
	rs := []Result{
		rounds{400 * ms, 500 * ms, 390 * ms}.result("nfs-cat big", "ganesha", true, 1e9, 1),
		rounds{360 * ms, 700 * ms, 650 * ms}.result("nfs-cat big", "storefs", false, 1e9, 1),
		{Workload: "nfs-cat big", System: "rclone", Skipped: "not installed"},
	}
	var b strings.Builder
	printTable(&b, rs)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("table has %d lines, want 5:\n%s", len(lines), b.String())
	}
	want := "| nfs-cat big | storefs | 360ms | 2778 | 3 | 0.92× | 650ms | 1.62× |"
	if lines[3] != want {
		t.Errorf("storefs row:\n got %s\nwant %s", lines[3], want)
	}
	for i, l := range lines {
		if n := strings.Count(l, "|"); n != 9 {
			t.Errorf("line %d has %d cell borders, want 9: %s", i, n, l)
		}
	}

	// A row timed once (fio) has no median, not even a peer's one.
	b.Reset()
	printTable(&b, []Result{rounds{time.Second}.result("fio", "peer", true, 0, 0), rs[1]})
	if want := "| fio | peer | 1s |  |  | 1.00 (peer) |  |  |"; !strings.Contains(b.String(), want+"\n") {
		t.Errorf("single-run peer row: want %q in\n%s", want, b.String())
	}

	// A single run prints no median columns.
	b.Reset()
	printTable(&b, []Result{rounds{time.Second}.result("w", "s", true, 0, 0)})
	if strings.Contains(b.String(), "median") {
		t.Errorf("single-run table has median columns:\n%s", b.String())
	}
}

func TestPrintTableNoteColumn(t *testing.T) {
	ms := time.Millisecond
	peer := rounds{100 * ms}.result("remote seq", "raw", true, 1e8, 1)
	peer.Note = "sent 1.00× the blob"
	rs := []Result{peer, rounds{200 * ms}.result("remote seq", "mount", false, 1e8, 1), {Workload: "remote seq", System: "other", Skipped: "no fuse"}}
	var b strings.Builder
	printTable(&b, rs)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("table has %d lines, want 5:\n%s", len(lines), b.String())
	}
	if want := "| remote seq | raw | 100ms | 1000 | 10 | 1.00 (peer) | sent 1.00× the blob |"; lines[2] != want {
		t.Errorf("noted row:\n got %s\nwant %s", lines[2], want)
	}
	for i, l := range lines {
		if n := strings.Count(l, "|"); n != 8 {
			t.Errorf("line %d has %d cell borders, want 8: %s", i, n, l)
		}
	}

	// Without notes the column is left out.
	b.Reset()
	printTable(&b, rs[1:2])
	if strings.Contains(b.String(), "note") {
		t.Errorf("table without notes has a note column:\n%s", b.String())
	}
}

func TestInterleaveVirtiofsChecks(t *testing.T) {
	got := interleave(3, 3)
	want := []timedCheck{{0, 0}, {1, 0}, {1, 1}, {0, 1}, {0, 2}, {1, 2}, {2, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("interleave(3, 3) = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name          string
		kind          string
		system, round int
		ok            bool
	}{
		{"find-0-2", "find", 0, 2, true},
		{"read-2-0", "read", 2, 0, true},
		{"drop-find-0-1", "", 0, 0, false},
		{"warm-up-1", "", 0, 0, false},
		{"mount-sfs", "", 0, 0, false},
	} {
		kind, system, round, ok := parseTimedCheck(tc.name)
		if kind != tc.kind || system != tc.system || round != tc.round || ok != tc.ok {
			t.Errorf("parseTimedCheck(%q) = %q, %d, %d, %v; want %q, %d, %d, %v", tc.name, kind, system, round, ok, tc.kind, tc.system, tc.round, tc.ok)
		}
	}
}

// TestFindInWalksRelativePaths checks that every system's timed find
// handles the same paths whatever its mount point: the guest's find
// lstats and prints each entry by the path it was given.
func TestFindInWalksRelativePaths(t *testing.T) {
	for _, root := range []string{"/mnt/sfs/d323lrgdrryglza1146n3mj605jz7ckb-tree", "/mnt/vfsd"} {
		cmd := findIn(root)
		walk, ok := strings.CutPrefix(cmd, "cd "+root+" && ")
		if !ok {
			t.Errorf("findIn(%q) = %q, want it to start in %s", root, cmd, root)
			continue
		}
		if walk != "find ." {
			t.Errorf("findIn(%q) walks with %q, want %q", root, walk, "find .")
		}
	}
}

func TestParseCounter(t *testing.T) {
	text := `# HELP storefs_grpc_blob_sent_bytes_total Blob bytes sent.
# TYPE storefs_grpc_blob_sent_bytes_total counter
storefs_grpc_blob_sent_bytes_total{package="snix"} 1.5e+06
storefs_grpc_blob_sent_bytes_total{package="tvix"} 500000
storefs_grpc_blob_sent_bytes_total_created 1.7e+09
storefs_grpc_blob_sent 7
`
	got, err := parseCounter(strings.NewReader(text), sentBytesMetric)
	if err != nil || !got.ok || got.bytes != 2e6 {
		t.Errorf("parseCounter = %+v, %v; want 2e6 bytes, ok", got, err)
	}
	got, err = parseCounter(strings.NewReader("storefs_connections{protocol=\"grpc\"} 1\n"), sentBytesMetric)
	if err != nil || got.ok {
		t.Errorf("parseCounter without the counter = %+v, %v; want not ok", got, err)
	}
	if s := sentPer([]sentBytes{got}, 1, "×", "the blob"); !strings.HasPrefix(s, "n/a") {
		t.Errorf("sentPer without the counter = %q, want n/a", s)
	}
	if s := sentPer([]sentBytes{{3 << 20, true}, {2 << 20, true}}, 2<<20, "×", "the blob"); s != "1.50× the blob (most of 2 runs)" {
		t.Errorf("sentPer = %q", s)
	}
}

func TestDistinctPages(t *testing.T) {
	for _, tc := range []struct {
		pages int64
		n     int
	}{{262144, 2000}, {2048, 200}, {10, 10}, {5, 20}} {
		offs := distinctPages(rand.New(rand.NewPCG(1, 2)), tc.pages, tc.n)
		if want := int(min(int64(tc.n), tc.pages)); len(offs) != want {
			t.Errorf("distinctPages(%d, %d) gave %d offsets, want %d", tc.pages, tc.n, len(offs), want)
		}
		seen := map[int64]bool{}
		for _, off := range offs {
			if off%pageSize != 0 || off < 0 || off >= tc.pages*pageSize || seen[off] {
				t.Fatalf("distinctPages(%d, %d): bad or repeated offset %d", tc.pages, tc.n, off)
			}
			seen[off] = true
		}
		if again := distinctPages(rand.New(rand.NewPCG(1, 2)), tc.pages, tc.n); !slices.Equal(offs, again) {
			t.Errorf("distinctPages(%d, %d) differs for the same seed", tc.pages, tc.n)
		}
	}
}

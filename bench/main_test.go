package main

import (
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

package local

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRateLimiter runs the scrubber's limiter on a fake clock: it starts
// empty, lets the bytes through at its rate, keeps at most its burst of
// credit while idle, and stops waiting when its context ends.
func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept time.Duration
	l := newRateLimiter(1000, 100) // 1000 B/s, 100 B of credit at most
	l.now = func() time.Time { return now }
	l.last = now
	l.sleep = func(ctx context.Context, d time.Duration) error {
		slept += d
		now = now.Add(d)
		return ctx.Err()
	}
	ctx := t.Context()
	for range 10 {
		if err := l.wait(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if want := time.Second; slept < want-time.Millisecond || slept > want+time.Millisecond {
		t.Errorf("1000 bytes at 1000 B/s from empty slept %s, want %s", slept, want)
	}
	// An hour idle earns only the burst.
	now = now.Add(time.Hour)
	slept = 0
	for range 3 {
		if err := l.wait(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if want := 200 * time.Millisecond; slept < want-time.Millisecond || slept > want+time.Millisecond {
		t.Errorf("300 bytes after an idle hour slept %s, want %s (100 bytes of credit)", slept, want)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.wait(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context = %v, want context.Canceled", err)
	}
}

package vfstest

import (
	"io"
	"log/slog"
	"testing"
)

// testLogger sends vfs's log lines to the test log, and to keep if it is
// not nil.
func testLogger(t *testing.T, keep io.Writer) *slog.Logger {
	var w io.Writer = testWriter{t}
	if keep != nil {
		w = io.MultiWriter(w, keep)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

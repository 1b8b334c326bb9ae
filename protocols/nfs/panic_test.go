package nfs

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/vfs"
)

// TestPanicInProcedure replaces GETATTR with a procedure that panics and
// checks that every call to it, inline or in its own goroutine, is
// answered with SYSTEM_ERR and logged once at Error with its stack, and
// that the connection, and others, are still served.
func TestPanicInProcedure(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	logs := &logLines{t: t}
	s, addr := serveTest(t, fsys, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.routes.nfs[1].handle = func(c *conn, cl *call, w *xdrWriter) error {
		w.u32(nfs3OK) // half a reply: it must not go out
		panic("injected failure")
	}

	// Inline: one call at a time on an idle connection.
	c := dialT(t, addr)
	var re *rpcError
	if _, err := c.getattr(c.root); !errors.As(err, &re) || re.denied || re.stat != acceptSystemErr {
		t.Fatalf("GETATTR = %v, want SYSTEM_ERR", err)
	}
	if _, err := c.nfs(19, "FSINFO", fhArgs(c.root)); err != nil {
		t.Fatalf("FSINFO after the panic: %v", err)
	}

	// In goroutines: calls sent in one write are buffered behind the
	// first, so dispatch hands them to goroutines.
	const pipelined = 8
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var msg []byte
	for i := range pipelined {
		rec := append(make([]byte, 4), callRecord(uint32(100+i), rpcVersion, progNFS, 3, 1, authNone, nil, fhArgs(c.root))...)
		setRecordMark(rec)
		msg = append(msg, rec...)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	seen := map[uint32]bool{}
	for range pipelined {
		rec, err := readRecord(br, nil, 1<<20)
		if err != nil {
			t.Fatalf("pipelined GETATTR: %v after %d replies", err, len(seen))
		}
		r := xdrReader{b: rec}
		xid := r.u32()
		if len(rec) != 24 || wantWords(xid, msgReply, replyAccepted, 0, 0, acceptSystemErr)(rec) != nil || seen[xid] {
			t.Fatalf("pipelined GETATTR reply %x, want one SYSTEM_ERR per call", rec)
		}
		seen[xid] = true
	}
	// The same connection still works.
	rec := append(make([]byte, 4), callRecord(200, rpcVersion, progNFS, 3, 0, authNone, nil, nil)...)
	setRecordMark(rec)
	if _, err := nc.Write(rec); err != nil {
		t.Fatal(err)
	}
	if got, err := readRecord(br, nil, 1<<20); err != nil || wantWords(200, msgReply, replyAccepted, 0, 0, acceptSuccess)(got) != nil {
		t.Fatalf("NULL after the panics = %x, %v", got, err)
	}
	if _, err := c.nfs(19, "FSINFO", fhArgs(c.root)); err != nil {
		t.Fatalf("FSINFO on the first connection: %v", err)
	}

	var panics, inline, goroutine int
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, `msg="nfs: procedure panicked"`) {
			continue
		}
		panics++
		if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "proc=GETATTR") ||
			!strings.Contains(line, "panic=\"injected failure\"") || !strings.Contains(line, "panic_test.go") {
			t.Errorf("panic log line lacks level, procedure, value or stack: %.300s", line)
		}
		if !strings.Contains(line, "client=127.0.0.1:") {
			t.Errorf("panic log line lacks the client: %.300s", line)
		}
		// The inline path runs under serve; the other in dispatch's goroutine.
		if strings.Contains(line, "(*conn).serve") {
			inline++
		} else if strings.Contains(line, "(*conn).dispatch.func") {
			goroutine++
		}
	}
	if panics != 1+pipelined || inline == 0 || goroutine == 0 {
		t.Errorf("%d panic log lines (%d inline, %d in goroutines), want %d with both paths", panics, inline, goroutine, 1+pipelined)
	}
}

package ninep_test

import (
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/vfs"
)

// closedWithin reports whether the server closes c within d: c is drained
// until it reads end-of-stream (true) or d passes (false).
func closedWithin(c *rawConn, d time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		_, _, _, err := c.recv()
		if err != nil {
			return !errors.Is(err, os.ErrDeadlineExceeded)
		}
	}
}

// TestWriteTimeout: a client that sends reads and takes no reply loses
// its connection after WriteTimeout, whether replies are copied or
// sent with sendfile; other clients are served
// meanwhile.
func TestWriteTimeout(t *testing.T) {
	fsys, _ := localFS(t, vfs.Options{})
	var logs logBuffer
	opts := ninep.Options{WriteTimeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, mode := range []struct {
		name       string
		noSendfile bool
	}{{"library", true}, {"sendfile", false}} {
		t.Run(mode.name, func(t *testing.T) {
			opts := opts
			opts.NoSendfile = mode.noSendfile
			_, addr := startServer(t, fsys, "tcp", opts)
			c := openRaw(t, "tcp", addr, 1<<20, rootBig1)
			if _, err := c.read(2, 0, 1<<20); err != nil { // sendfile
				t.Fatal(err)
			}
			var out []byte
			for tag := uint16(10); tag < 138; tag++ { // 128 MiB of replies nobody reads
				out = append(out, frame(tread, tag, msg{}.u32(2).u64(0).u32(1<<20))...)
			}
			start := time.Now()
			go c.send(out) // blocks too, once the server stops reading
			time.Sleep(opts.WriteTimeout / 2)
			stillServes(t, addr)
			// Wait past the timeout before reading anything: the
			// server is blocked writing, its deadline runs.
			time.Sleep(opts.WriteTimeout * 3)
			if !closedWithin(c, 5*time.Second) {
				t.Fatalf("connection still open %v after the client stopped reading (WriteTimeout %v)", time.Since(start), opts.WriteTimeout)
			}
			logs.waitFor(t, "the client took no reply for too long", 1)
			stillServes(t, addr)
		})
	}
}

// TestMessageTimeout: a connection that stops in the middle of a message
// is closed after MessageTimeout; one that is idle between messages is
// not.
func TestMessageTimeout(t *testing.T) {
	var logs logBuffer
	opts := ninep.Options{MessageTimeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	_, addr := startServer(t, fixtureFS(t, vfs.Options{}), "tcp", opts)

	idle := session(t, addr, 8192)
	for name, partial := range map[string][]byte{
		"a partial header":   {50, 0, 0},
		"a partial body":     frame(twalk, 1, walkBody(1, 2, []string{rootA}))[:12],
		"a partial Tversion": frame(tversion, noTag, msg{}.u32(8192).str("9P2000.L"))[:9],
	} {
		var c *rawConn
		if name == "a partial Tversion" {
			c = dialRaw(t, "tcp", addr)
		} else {
			c = session(t, addr, 8192)
		}
		start := time.Now()
		if err := c.send(partial); err != nil {
			t.Fatal(err)
		}
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s: connection still open after %v", name, time.Since(start))
		} else if d := time.Since(start); d < opts.MessageTimeout {
			t.Errorf("%s: closed after %v, before MessageTimeout", name, d)
		}
	}
	logs.waitFor(t, "a message stopped arriving midway", 3)
	// The idle connection was idle far longer than MessageTimeout.
	if _, err := idle.walk(1, 2, rootA); err != nil {
		t.Errorf("idle connection: %v", err)
	}
	// A message sent in two parts within the timeout is served.
	m := frame(twalk, 7, walkBody(1, 3, []string{rootA}))
	idle.send(m[:10])
	time.Sleep(opts.MessageTimeout / 4)
	idle.send(m[10:])
	if typ, tag, _, err := idle.recv(); err != nil || typ != twalk+1 || tag != 7 {
		t.Errorf("message in two parts: reply type %d tag %d, %v", typ, tag, err)
	}
}

package ninep_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storefs/storefs/protocols/ninep"
)

// answeredWithin reads what the server sends c for d: it reports whether
// the server answered (replies, or closed the connection) rather than
// leaving the client waiting, and how many replies came.
func answeredWithin(c *rawConn, want int, d time.Duration) (ok bool, replies int) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	for replies < want {
		if _, _, _, err := c.recv(); err != nil {
			return !isTimeout(err), replies
		}
		replies++
	}
	return true, replies
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

// TestHostileLoopback sends hostile streams from many raw connections at
// once to a server on loopback: each gets its replies or is closed within
// a few seconds, the heap grows by a bounded amount while they are held
// and goes back once they are gone, and a normal session is served
// throughout.
func TestHostileLoopback(t *testing.T) {
	fsys, root, _ := deepTree(t)
	opts := ninep.Options{MaxFids: 4096, MaxServerFids: 16384, MessageTimeout: time.Second}
	_, addr := startServer(t, fsys, "tcp", opts)
	version := frame(tversion, noTag, msg{}.u32(1<<20).str("9P2000.L"))
	attach := frame(tattach, 1, msg{}.u32(1).u32(noFid).str("").str("").u32(0))
	many := func(n int, f func(i int) []byte) []byte {
		var b []byte
		for i := range n {
			b = append(b, f(i)...)
		}
		return b
	}
	deep := deepNames(root, 16)
	cases := []struct {
		name    string
		send    []byte
		replies int // replies expected before the end; the server may also close
	}{
		{"100 MiB size before Tversion", append(binary32(100<<20), tversion, 0xff, 0xff), 0},
		{"request before Tversion", attach, 0},
		{"size over msize", append(append(version[:len(version):len(version)], attach...), append(binary32(2<<20), twalk, 1, 0)...), 2},
		{"17 names", append(append(version[:len(version):len(version)], attach...), frame(twalk, 2, walkBody(1, 2, strings.Split(strings.Repeat("d/", 17)[:33], "/")))...), 3},
		{"65 535 names announced", append(append(version[:len(version):len(version)], attach...), frame(twalk, 2, msg{}.u32(1).u32(2).u16(0xFFFF))...), 3},
		{"huge counts", append(append(version[:len(version):len(version)], attach...), append(frame(twalk, 2, walkBody(1, 2, deep[:1])), append(frame(tlopen, 3, msg{}.u32(2).u32(0)), append(frame(treaddir, 4, msg{}.u32(2).u64(0).u32(0xFFFFFFFF)), frame(tread, 5, msg{}.u32(2).u64(0).u32(0xFFFFFFFF))...)...)...)...), 6},
		{"reused tags", append(append(version[:len(version):len(version)], attach...), many(64, func(int) []byte { return frame(tstatfs, 9, msg{}.u32(1)) })...), 2},
		{"replies and unknown types", append(append(version[:len(version):len(version)], attach...), many(200, func(i int) []byte { return frame(uint8(111+i%2*140), uint16(i+2), msg{}.u16(0xFFFF)) })...), 202},
		{"fid exhaustion, 16 names a fid", append(append(version[:len(version):len(version)], attach...), many(1000, func(i int) []byte { return frame(twalk, uint16(i+2), walkBody(1, uint32(i+10), deep)) })...), 1002},
		{"fid exhaustion, 1 name a fid", append(append(version[:len(version):len(version)], attach...), many(6000, func(i int) []byte { return frame(twalk, uint16(i+2), walkBody(1, uint32(i+10), deep[:1])) })...), 6002},
		{"long aname and uname", append(version[:len(version):len(version)], frame(tattach, 1, msg{}.u32(1).u32(noFid).str(strings.Repeat("u", 60000)).str(strings.Repeat("a/", 30000)).u32(0))...), 2},
		{"Twrite of msize", append(append(version[:len(version):len(version)], attach...), frame(twrite, 2, msg{}.u32(1).u64(0).u32(1<<20-23).append(make([]byte, 1<<20-23)))...), 3},
		{"stalled mid-message", append(append(version[:len(version):len(version)], attach...), frame(twalk, 2, walkBody(1, 2, deep))[:20]...), 2},
	}
	before := heapInUse()
	var conns []*rawConn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for round := range 3 {
		for _, tc := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := dialRaw(t, "tcp", addr)
				if err := c.send(tc.send); err != nil {
					return // the server closed early: an answer
				}
				start := time.Now()
				if ok, n := answeredWithin(c, tc.replies, 5*time.Second); !ok {
					t.Errorf("round %d, %s: %d of %d replies and no close after %v", round, tc.name, n, tc.replies, time.Since(start))
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	held := int64(heapInUse()) - int64(before)
	serves := func() {
		t.Helper()
		c := dialP9(t, "tcp", addr, 1<<16)
		defer c.Close()
		if b, err := c.ReadFile(root + "/run.sh"); err != nil || string(b) != "#!/bin/sh\n" {
			t.Fatalf("a normal session reads %q, %v", b, err)
		}
	}
	serves()
	// 16 384 fid references at ~0.5 KiB, read buffers, connection buffers.
	if held > 48<<20 {
		t.Errorf("the heap grew by %d MiB with %d hostile connections open", held>>20, len(conns))
	}
	for _, c := range conns {
		c.conn.Close()
	}
	var after int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if after = int64(heapInUse()) - int64(before); after < 4<<20 {
			break
		}
	}
	if after >= 4<<20 {
		t.Errorf("the heap is %d MiB larger once the hostile connections are gone", after>>20)
	}
	t.Logf("%d hostile connections: heap +%.1f MiB while open, %+.1f MiB after", len(conns), float64(held)/(1<<20), float64(after)/(1<<20))
	serves()
}

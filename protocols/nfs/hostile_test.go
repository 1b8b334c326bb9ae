package nfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// Hostile clients over a real socket: every case below was found by
// review or fuzzing, and each must end in a bounded answer (a reply, or
// the connection closed, within hostileDeadline), cost bounded memory
// (heap growth under hostileHeap while it runs), and leave the server
// serving a normal client.

const (
	hostileDeadline = 5 * time.Second
	hostileHeap     = 32 << 20
	hostileIdle     = time.Second // the server's IdleTimeout in these tests
)

// hostileCase is raw bytes for a fresh connection and a check of what
// comes back: the first reply record, or closed if the server closed the
// connection without one.
type hostileCase struct {
	name  string
	send  []byte
	check func(reply []byte, closed bool) error
}

// record frames a call record with its record mark.
func record(rec []byte) []byte {
	b := append(make([]byte, 4), rec...)
	setRecordMark(b)
	return b
}

// wantReply checks for a reply whose words after the xid are words.
func wantReply(xid uint32, words ...uint32) func([]byte, bool) error {
	return func(rec []byte, closed bool) error {
		if closed {
			return errors.New("connection closed without a reply")
		}
		return wantWords(xid, words...)(rec)
	}
}

// wantClosed checks that the server closed the connection.
func wantClosed(rec []byte, closed bool) error {
	if !closed {
		return fmt.Errorf("reply %x, want the connection closed", rec[:min(len(rec), 64)])
	}
	return nil
}

// wantSuccess checks an accepted SUCCESS reply whose results pass check.
func wantSuccess(xid uint32, check func(results []byte) error) func([]byte, bool) error {
	return func(rec []byte, closed bool) error {
		if closed {
			return errors.New("connection closed without a reply")
		}
		stat, res, denied, err := replyStat(rec, xid)
		if err != nil {
			return err
		}
		if denied || stat != acceptSuccess {
			return fmt.Errorf("reply %x, want SUCCESS", rec[:min(len(rec), 64)])
		}
		return check(res)
	}
}

// exchange sends c.send on a new connection and returns the first reply
// record, or closed. It fails if neither comes within hostileDeadline.
func (c hostileCase) exchange(addr string) ([]byte, bool, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(hostileDeadline))
	if _, err := nc.Write(c.send); err != nil {
		if isClosed(err) {
			return nil, true, nil
		}
		return nil, false, err
	}
	rec, err := readRecord(bufio.NewReader(nc), nil, 4<<20)
	switch {
	case err == nil:
		return rec, false, nil
	case isClosed(err):
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("no reply and no close: %w", err)
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// heapPeak runs f and returns how far HeapInuse rose above its level
// before f, sampled every few milliseconds while f runs.
func heapPeak(f func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	if peak < base {
		return 0
	}
	return peak - base
}

// stillServed checks that a normal client gets normal answers.
func stillServed(t *testing.T, addr string) {
	t.Helper()
	c, err := dialTest(addr)
	if err != nil {
		t.Fatalf("a normal client cannot mount: %v", err)
	}
	defer c.Close()
	if es, err := c.ReadDir(storetest.RootComplicated, 0); err != nil || len(es) != 5 {
		t.Fatalf("a normal client's READDIRPLUS: %v, %v", es, err)
	}
	if data, err := c.ReadFile(storetest.RootBlobB); err != nil || !bytes.Equal(data, storetest.BlobB) {
		t.Fatalf("a normal client's READ: %d bytes, %v", len(data), err)
	}
}

// TestHostileClients sends each hostile case through a raw TCP socket.
func TestHostileClients(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{ListRoot: true, Logger: discardLogger()})
	logs := &logLines{t: t}
	_, addr := serveTest(t, fsys, Options{IdleTimeout: hostileIdle, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c := dialT(t, addr)
	dir, err := c.Handle(storetest.RootComplicated)
	if err != nil {
		t.Fatal(err)
	}
	big, err := c.Handle(storetest.RootBlobB)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	var cases []hostileCase
	add := func(name string, send []byte, check func([]byte, bool) error) {
		cases = append(cases, hostileCase{name, send, check})
	}
	xid := uint32(1000)
	call := func(prog, proc uint32, args []byte) (uint32, []byte) {
		xid++
		return xid, record(callRecord(xid, rpcVersion, prog, 3, proc, authSys, authSysCredTest(), args))
	}

	// READDIR and READDIRPLUS with tiny maxcounts past the end: the call
	// that used to spin a core forever.
	for _, plus := range []bool{false, true} {
		proc := uint32(16)
		if plus {
			proc = 17
		}
		for _, maxcount := range []uint32{0, 1, 24, 83, 84, 85, 107} {
			for _, cookie := range []uint64{1000, math.MaxUint64} {
				x, rec := call(progNFS, proc, readdirArgs(dir, cookie, maxcount, plus))
				add(fmt.Sprintf("READDIR plus %v maxcount %d cookie %d", plus, maxcount, cookie), rec,
					wantSuccess(x, func(res []byte) error {
						if st := (&xdrReader{b: res}).u32(); st != nfs3ErrTooSmall {
							return fmt.Errorf("status %d, want TOOSMALL", st)
						}
						return nil
					}))
			}
		}
		x, rec := call(progNFS, proc, readdirArgs(dir, 1000, readdirOverhead, plus))
		add(fmt.Sprintf("READDIR plus %v past the end, empty reply fits", plus), rec, wantSuccess(x, func(res []byte) error {
			return checkResults(progNFS, proc, readdirArgs(dir, 1000, readdirOverhead, plus), res)
		}))
		x, rec = call(progNFS, proc, readdirArgs(dir, 0, math.MaxUint32, plus))
		add(fmt.Sprintf("READDIR plus %v maxcount 4 GiB", plus), rec, wantSuccess(x, func(res []byte) error {
			return checkResults(progNFS, proc, readdirArgs(dir, 0, math.MaxUint32, plus), res)
		}))
	}

	// MNT whose dirpath claims 0xF0000000 bytes: it used to cost
	// gigabytes through go-nfs.
	x, rec := call(progMount, 1, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'})
	add("MNT dirpath of 0xF0000000 bytes", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptSuccess, nfs3ErrNameLong))
	x, rec = call(progMount, 1, []byte{0xff, 0xff, 0xff, 0xff})
	add("MNT dirpath of 4 GiB, nothing sent", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptSuccess, nfs3ErrNameLong))
	x, rec = call(progMount, 1, append([]byte{0, 1, 0, 0}, bytes.Repeat([]byte{'/'}, 1<<16)...))
	add("MNT dirpath of 64 KiB, all sent", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptSuccess, nfs3ErrNameLong))
	x, rec = call(progMount, 3, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'})
	add("UMNT dirpath of 0xF0000000 bytes", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptGarbageArgs))

	// Names and handles.
	x, rec = call(progNFS, 3, append(fhArgs(dir), 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c', 'd'))
	add("LOOKUP name of 4 GiB", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptGarbageArgs))
	x, rec = call(progNFS, 3, enc(func(w *xdrWriter) { w.opaque(dir); w.string(strings.Repeat("n", 4096)) }))
	add("LOOKUP name of 4 KiB", rec, wantSuccess(x, func(res []byte) error {
		if st := (&xdrReader{b: res}).u32(); st != nfs3ErrNameLong {
			return fmt.Errorf("status %d, want NAMETOOLONG", st)
		}
		return nil
	}))
	x, rec = call(progNFS, 1, append([]byte{0xff, 0xff, 0xff, 0xff}, make([]byte, 64)...))
	add("GETATTR handle of 4 GiB", rec, wantReply(x, msgReply, replyAccepted, 0, 0, acceptGarbageArgs))

	// Counts.
	x, rec = call(progNFS, 6, readArgs(big, 0, math.MaxUint32))
	add("READ of 4 GiB", rec, wantSuccess(x, func(res []byte) error {
		return checkResults(progNFS, 6, readArgs(big, 0, math.MaxUint32), res)
	}))
	x, rec = call(progNFS, 6, readArgs(big, math.MaxUint64, math.MaxUint32))
	add("READ at offset 2^64-1", rec, wantSuccess(x, func(res []byte) error {
		return checkResults(progNFS, 6, readArgs(big, math.MaxUint64, math.MaxUint32), res)
	}))

	// Credentials and verifiers.
	longMachine := enc(func(w *xdrWriter) { w.u32(0); w.string(strings.Repeat("m", 256)); w.u32s(0, 0, 0) })
	xid++
	add("AUTH_SYS machine name of 256 bytes", record(callRecord(xid, rpcVersion, progNFS, 3, 0, authSys, longMachine, nil)),
		wantReply(xid, msgReply, replyDenied, rejectAuthError, authBadCred))
	manyGids := enc(func(w *xdrWriter) { w.u32s(0, 0, 0, 0, math.MaxUint32) })
	xid++
	add("AUTH_SYS with 2^32-1 gids", record(callRecord(xid, rpcVersion, progNFS, 3, 0, authSys, manyGids, nil)),
		wantReply(xid, msgReply, replyDenied, rejectAuthError, authBadCred))
	xid++
	add("credential of 4 GiB", record(enc(func(w *xdrWriter) {
		w.u32s(xid, msgCall, rpcVersion, progNFS, 3, 0, authSys, math.MaxUint32)
	})), wantReply(xid, msgReply, replyAccepted, 0, 0, acceptGarbageArgs))
	xid++
	add("verifier of 4 GiB", record(enc(func(w *xdrWriter) {
		w.u32s(xid, msgCall, rpcVersion, progNFS, 3, 0, authNone, 0, authNone, math.MaxUint32)
	})), wantReply(xid, msgReply, replyAccepted, 0, 0, acceptGarbageArgs))

	// Record marking.
	add("record of 2 GiB declared", []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, wantClosed)
	add("record at the limit declared, 4 bytes sent, then silence",
		append(binary32(1<<31|DefaultMaxRecordSize), 1, 2, 3, 4), wantClosed)
	add("fragments over the limit together",
		append(append(binary32(DefaultMaxRecordSize/2), make([]byte, DefaultMaxRecordSize/2)...), binary32(1<<31|(DefaultMaxRecordSize/2+1))...), wantClosed)
	x, rec = call(progNFS, 0, nil)
	add("a thousand empty fragments, then a call", append(bytes.Repeat([]byte{0, 0, 0, 0}, 1000), rec...),
		wantReply(x, msgReply, replyAccepted, 0, 0, acceptSuccess))

	for _, hc := range cases {
		var reply []byte
		var closed bool
		var err error
		start := time.Now()
		grew := heapPeak(func() { reply, closed, err = hc.exchange(addr) })
		took := time.Since(start)
		if err == nil {
			err = hc.check(reply, closed)
		}
		if err != nil {
			t.Errorf("%s: %v", hc.name, err)
		}
		if grew > hostileHeap {
			t.Errorf("%s: heap grew by %d MiB", hc.name, grew>>20)
		}
		t.Logf("%s: answered in %v, heap +%d KiB", hc.name, took.Round(time.Millisecond), grew>>10)
	}
	stillServed(t, addr)
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 1024 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
}

// TestHostileUnreadReplies pipelines 64 READs of 1 MiB and never reads
// the replies: the write deadline must close the connection within the
// idle timeout, for copied and sendfile replies alike, with bounded heap,
// and other clients must be served meanwhile and after.
func TestHostileUnreadReplies(t *testing.T) {
	fsys, _ := localFS(t, vfs.Options{Logger: discardLogger()})
	for _, mode := range []SendfileMode{SendfileNever, SendfileAlways} {
		t.Run(mode.String(), func(t *testing.T) {
			s, addr := serveTest(t, fsys, Options{IdleTimeout: hostileIdle, WriteTimeout: hostileIdle, Sendfile: mode, Logger: discardLogger()})
			c := dialT(t, addr)
			fh, _, err := c.lookup(c.root, rootBig1)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			for xid := uint32(10); xid < 74; xid++ {
				out = append(out, record(callRecord(xid, rpcVersion, progNFS, 3, 6, authNone, nil, readArgs(fh, 0, 1<<20)))...)
			}
			grew := heapPeak(func() {
				stuck, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer stuck.Close()
				if _, err := stuck.Write(out); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				if b, _, err := c.readFH(fh, 0, 4096); err != nil || len(b) != 4096 {
					t.Errorf("another client's READ while one is stuck: %d bytes, %v", len(b), err)
				}
				deadline := time.Now().Add(hostileIdle + hostileDeadline)
				for {
					open := false
					s.mu.Lock()
					for sc := range s.conns {
						open = open || sc.nc.RemoteAddr().String() == stuck.LocalAddr().String()
					}
					s.mu.Unlock()
					if !open {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the stuck connection is still open after %v", hostileIdle+hostileDeadline)
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
			if grew > hostileHeap {
				t.Errorf("heap grew by %d MiB", grew>>20)
			}
			t.Logf("heap +%d KiB", grew>>10)
			// A new client: c may have idled out meanwhile.
			if b, _, err := dialT(t, addr).readFH(fh, 0, 1<<20); err != nil || len(b) != 1<<20 {
				t.Errorf("READ after the stuck client: %d bytes, %v", len(b), err)
			}
		})
	}
}

// TestReplyMemoryBudget: many connections that send READs of 1 MiB and read
// no reply pin at most MaxReplyMemory of reply buffers between them, not
// MaxInFlight buffers each; once their writes time out, others are served.
func TestReplyMemoryBudget(t *testing.T) {
	fsys, _ := localFS(t, vfs.Options{Logger: discardLogger()})
	s, addr := serveTest(t, fsys, Options{IdleTimeout: hostileIdle, WriteTimeout: hostileIdle,
		MaxReplyMemory: 4 << 20, Sendfile: SendfileNever, Logger: discardLogger()})
	if n := cap(s.replyBudget); n != 3 {
		t.Fatalf("%d reply buffers for 4 MiB, want 3", n)
	}
	c := dialT(t, addr)
	fh, _, err := c.lookup(c.root, rootBig1)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for xid := uint32(10); xid < 26; xid++ { // MaxInFlight of them
		out = append(out, record(callRecord(xid, rpcVersion, progNFS, 3, 6, authNone, nil, readArgs(fh, 0, 1<<20)))...)
	}
	const stuckConns = 8
	grew := heapPeak(func() {
		for range stuckConns {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// A small receive buffer, so that the replies stay in the
			// server rather than in the kernel.
			nc.(*net.TCPConn).SetReadBuffer(4096)
			if _, err := nc.Write(out); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		for deadline := time.Now().Add(hostileIdle + hostileDeadline); ; time.Sleep(10 * time.Millisecond) {
			s.mu.Lock()
			open := len(s.conns)
			s.mu.Unlock()
			if open <= 1 { // c alone, or none if c idled out
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d connections still open %v after their replies stopped being read", open, hostileIdle+hostileDeadline)
			}
		}
	})
	t.Logf("heap +%d KiB with %d connections of %d unread 1 MiB READs each", grew>>10, stuckConns, 16)
	if grew > 24<<20 {
		t.Errorf("heap grew by %d MiB; the budget is 4 MiB (without it: %d MiB)", grew>>20, stuckConns*16)
	}
	if b, _, err := dialT(t, addr).readFH(fh, 0, 1<<20); err != nil || len(b) != 1<<20 {
		t.Errorf("READ after the stuck clients: %d bytes, %v", len(b), err)
	}
}

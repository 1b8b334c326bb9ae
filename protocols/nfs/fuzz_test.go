package nfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// Fuzz targets. FuzzRPCRecord feeds a byte stream to the record reader and
// the call-header and credential decoders, and every call in it through
// dispatch; FuzzXDR drives the XDR reader; FuzzProcedure runs one MOUNT or
// NFSv3 procedure with the fuzzer's arguments against the fixture store.
// The last two share a server without a socket (fuzzConn), so that an
// input costs microseconds. Every reply must decode, procedure by
// procedure, and every call must be answered within callDeadline; a
// panic, which run would turn into SYSTEM_ERR, fails the input through
// the Error line it logs.

// callDeadline bounds one call: procedures over the in-memory fixtures
// take microseconds; this leaves room for a loaded fuzzing machine.
const callDeadline = 5 * time.Second

// fuzzConn is a net.Conn whose reads end at once and whose writes are
// kept, for running dispatch without a socket.
type fuzzConn struct {
	mu     sync.Mutex
	out    []byte
	closed bool
}

func (c *fuzzConn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.out = append(c.out, p...)
	return len(p), nil
}
func (c *fuzzConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2049} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 700} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// take returns what was written since the last take, and whether the
// connection was closed.
func (c *fuzzConn) take() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, closed := c.out, c.closed
	c.out = nil
	return out, closed
}

// errorLog is a slog.Handler that keeps the Error records it is given.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorLog) WithGroup(string) slog.Handler      { return h }

func (h *errorLog) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.msgs
	h.msgs = nil
	return m
}

// fuzzFixture is a server over the fixture store (root listable) and one
// connection to it on a fuzzConn.
type fuzzFixture struct {
	s    *Server
	c    *conn
	nc   *fuzzConn
	errs *errorLog
	xid  uint32
	// handles of fixture nodes of every kind, for seeds
	root, dir, keepDir, file, bigFile, exec, symlink, emptyFile []byte
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	f.Helper()
	ctx := context.Background()
	st := memory.New()
	f.Cleanup(func() { st.Close() })
	if err := storetest.NewFixtures().Fill(ctx, st, storetest.FillOptions{}); err != nil {
		f.Fatal(err)
	}
	fsys, err := vfs.New(st, vfs.Options{ListRoot: true, Logger: discardLogger()})
	if err != nil {
		f.Fatal(err)
	}
	errs := &errorLog{}
	s, err := New(fsys, Options{Logger: slog.New(errs)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	nc := &fuzzConn{}
	fx := &fuzzFixture{s: s, c: s.newConn(nc), nc: nc, errs: errs}
	handle := func(path string) []byte {
		n, err := fsys.Walk(ctx, path, false)
		if err != nil {
			f.Fatalf("fixture %s: %v", path, err)
		}
		return n.Handle()
	}
	fx.root = handle("/")
	fx.dir = handle(storetest.RootComplicated)
	fx.keepDir = handle(storetest.RootComplicated + "/keep")
	fx.emptyFile = handle(storetest.RootComplicated + "/.keep")
	fx.file = handle(storetest.RootBlobA)
	fx.bigFile = handle(storetest.RootBlobB)
	fx.exec = handle(storetest.RootHelloExec)
	fx.symlink = handle(storetest.RootComplicated + "/aa")
	return fx
}

// dispatch runs one record through dispatch, as the serve loop does for a
// call that arrives alone, and returns what was written. It fails t if the
// call takes longer than callDeadline or logs an Error (a recovered
// panic).
func (fx *fuzzFixture) dispatch(t *testing.T, rec []byte) []byte {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fx.c.dispatch(rec, true)
	}()
	select {
	case <-done:
	case <-time.After(callDeadline):
		t.Fatalf("call not answered within %v: record %x", callDeadline, rec[:min(len(rec), 200)])
	}
	out, closed := fx.nc.take()
	if msgs := fx.errs.take(); len(msgs) > 0 {
		t.Fatalf("record %x logged errors:\n%s", rec[:min(len(rec), 200)], strings.Join(msgs, "\n"))
	}
	if closed {
		t.Fatalf("record %x closed the connection", rec[:min(len(rec), 200)])
	}
	return out
}

// call builds a call record (AUTH_SYS) with a fresh xid.
func (fx *fuzzFixture) call(prog, proc uint32, args []byte) (uint32, []byte) {
	fx.xid++
	return fx.xid, callRecord(fx.xid, rpcVersion, prog, 3, proc, authSys, authSysCredTest(), args)
}

// splitReply checks that out is one whole reply record and returns it
// without its mark.
func splitReply(out []byte) ([]byte, error) {
	if len(out) < 4 {
		return nil, fmt.Errorf("reply of %d bytes", len(out))
	}
	rec, err := readRecord(bufio.NewReader(bytes.NewReader(out)), nil, len(out))
	if err != nil {
		return nil, fmt.Errorf("reply record: %w", err)
	}
	if len(rec) != len(out)-4 {
		return nil, fmt.Errorf("%d bytes written, reply record of %d", len(out), len(rec))
	}
	return rec, nil
}

// replyStat decodes a reply header for xid and returns the reply's
// accept_stat and results, or denied for MSG_DENIED.
func replyStat(rec []byte, xid uint32) (stat uint32, results []byte, denied bool, err error) {
	r := xdrReader{b: rec}
	if x := r.u32(); x != xid {
		return 0, nil, false, fmt.Errorf("reply xid %d, want %d", x, xid)
	}
	if mt := r.u32(); mt != msgReply {
		return 0, nil, false, fmt.Errorf("message type %d", mt)
	}
	switch rs := r.u32(); rs {
	case replyDenied:
		switch rej := r.u32(); rej {
		case rejectRPCMismatch:
			r.u32()
			r.u32()
		case rejectAuthError:
			if as := r.u32(); as != authBadCred && as != authTooWeak {
				return 0, nil, true, fmt.Errorf("auth_stat %d", as)
			}
		default:
			return 0, nil, true, fmt.Errorf("reject_stat %d", rej)
		}
		if r.err != nil || len(r.b) != 0 {
			return 0, nil, true, fmt.Errorf("MSG_DENIED reply %x", rec)
		}
		return 0, nil, true, nil
	case replyAccepted:
	default:
		return 0, nil, false, fmt.Errorf("reply_stat %d", rs)
	}
	if flavor, body := r.u32(), r.opaque(maxAuthBytes); flavor != authNone || len(body) != 0 {
		return 0, nil, false, fmt.Errorf("verifier %d %x", flavor, body)
	}
	stat = r.u32()
	if r.err != nil {
		return 0, nil, false, fmt.Errorf("reply %x: %w", rec, r.err)
	}
	switch stat {
	case acceptSuccess:
	case acceptProgMismatch:
		if lo, hi := r.u32(), r.u32(); lo != 3 || hi != 3 {
			return 0, nil, false, fmt.Errorf("PROG_MISMATCH %d..%d", lo, hi)
		}
		fallthrough
	case acceptProgUnavail, acceptProcUnavail, acceptGarbageArgs, acceptSystemErr:
		if r.err != nil || len(r.b) != 0 {
			return 0, nil, false, fmt.Errorf("accept_stat %d reply %x", stat, rec)
		}
	default:
		return 0, nil, false, fmt.Errorf("accept_stat %d", stat)
	}
	return stat, r.b, false, nil
}

// knownStatus is every nfsstat3 (and mountstat3) the server may answer.
func knownStatus(st uint32) bool {
	if st == nfs3OK || st == nfs3ErrTooSmall || st == nfs3ErrIO || st == nfs3ErrNameLong {
		return true
	}
	for _, v := range statusOfErrno {
		if v == st {
			return true
		}
	}
	return false
}

// resultChecker decodes the results of one procedure and checks them
// against its arguments.
type resultChecker struct {
	all  []byte // the results
	r    xdrReader
	args xdrReader
}

func (rc *resultChecker) fattr() {
	if typ := rc.r.u32(); typ != nf3Reg && typ != nf3Dir && typ != nf3Lnk {
		rc.r.fail()
		return
	}
	rc.r.fixed(fattr3Len - 4)
}

func (rc *resultChecker) postOpAttr() {
	switch rc.r.u32() {
	case 0:
	case 1:
		rc.fattr()
	default:
		rc.r.fail()
	}
}

func (rc *resultChecker) wcc() {
	switch rc.r.u32() { // pre_op_attr
	case 0:
	case 1:
		rc.r.fixed(24)
	default:
		rc.r.fail()
	}
	rc.postOpAttr()
}

func (rc *resultChecker) bool() bool {
	v := rc.r.u32()
	if v > 1 {
		rc.r.fail()
	}
	return v == 1
}

// checkResults decodes the SUCCESS results of procedure proc of prog.
func checkResults(prog, proc uint32, args, results []byte) error {
	rc := &resultChecker{all: results, r: xdrReader{b: results}, args: xdrReader{b: args}}
	if err := rc.check(prog, proc); err != nil {
		return err
	}
	if rc.r.err != nil {
		return fmt.Errorf("results %x do not decode", results)
	}
	if len(rc.r.b) != 0 {
		return fmt.Errorf("%d bytes after the results %x", len(rc.r.b), results)
	}
	return nil
}

func (rc *resultChecker) check(prog, proc uint32) error {
	r := &rc.r
	if prog == progMount {
		switch proc {
		case 0, 3, 4: // NULL, UMNT, UMNTALL
		case 1: // MNT
			st := r.u32()
			if !knownStatus(st) {
				return fmt.Errorf("MNT status %d", st)
			}
			if st == nfs3OK {
				if fh := r.opaque(maxFH); len(fh) == 0 {
					r.fail()
				}
				if n := r.u32(); n != 2 || r.u32() != authSys || r.u32() != authNone {
					return errors.New("MNT flavors")
				}
			}
		case 2: // DUMP
			if rc.bool() {
				return errors.New("DUMP lists mounts")
			}
		case 5: // EXPORT
			for rc.bool() {
				r.opaque(mntPathLen)
				for rc.bool() {
					r.opaque(255)
				}
			}
		}
		return nil
	}
	if proc == 0 {
		return nil
	}
	st := r.u32()
	if !knownStatus(st) {
		return fmt.Errorf("procedure %d: status %d", proc, st)
	}
	ok := st == nfs3OK
	switch proc {
	case 1: // GETATTR
		if ok {
			rc.fattr()
		}
	case 2, 7, 12, 13, 21: // SETATTR, WRITE, REMOVE, RMDIR, COMMIT
		rc.wcc()
	case 8, 9, 10, 11: // CREATE, MKDIR, SYMLINK, MKNOD
		rc.wcc()
	case 14: // RENAME
		rc.wcc()
		rc.wcc()
	case 15: // LINK
		rc.postOpAttr()
		rc.wcc()
	case 3: // LOOKUP
		if ok {
			if fh := r.opaque(maxFH); len(fh) == 0 {
				r.fail()
			}
			rc.postOpAttr()
		}
		rc.postOpAttr()
	case 4: // ACCESS
		rc.postOpAttr()
		if ok {
			rc.args.opaque(maxFH)
			want := rc.args.u32()
			if got := r.u32(); got&^want != 0 || got&^(access3Read|access3Lookup|access3Execute) != 0 {
				return fmt.Errorf("ACCESS grants %#x of %#x", got, want)
			}
		}
	case 5: // READLINK
		rc.postOpAttr()
		if ok {
			r.opaque(4096)
		}
	case 6: // READ
		rc.postOpAttr()
		if ok {
			rc.args.opaque(maxFH)
			rc.args.u64()
			want := rc.args.u32()
			n := r.u32()
			rc.bool()
			data := r.opaque(math.MaxInt32)
			if uint32(len(data)) != n || n > want || n > DefaultMaxRead {
				return fmt.Errorf("READ of %d: count %d, %d bytes", want, n, len(data))
			}
		}
	case 16, 17: // READDIR, READDIRPLUS
		plus := proc == 17
		rc.postOpAttr()
		if !ok {
			break
		}
		r.fixed(8)
		entries := 0
		for rc.bool() {
			entries++
			r.u64()
			if name := r.opaque(255); len(name) == 0 {
				r.fail()
			}
			r.u64()
			if plus {
				rc.postOpAttr()
				if rc.bool() {
					r.opaque(maxFH)
				}
			}
		}
		eof := rc.bool()
		if entries == 0 && !eof {
			return errors.New("READDIR: OK without entries or eof")
		}
		rc.args.opaque(maxFH)
		rc.args.fixed(16)
		if plus {
			rc.args.u32()
		}
		if maxcount := rc.args.u32(); len(rc.all) > int(maxcount) {
			return fmt.Errorf("READDIR reply of %d bytes for maxcount %d", len(rc.all), maxcount)
		}
	case 18: // FSSTAT
		rc.postOpAttr()
		if ok {
			r.fixed(6*8 + 4)
		}
	case 19: // FSINFO
		rc.postOpAttr()
		if ok {
			r.fixed(7*4 + 8 + 8 + 4)
		}
	case 20: // PATHCONF
		rc.postOpAttr()
		if ok {
			r.fixed(2 * 4)
			for range 4 {
				rc.bool()
			}
		}
	}
	if write := proc == 2 || proc >= 7 && proc <= 15 || proc == 21; ok && write {
		return fmt.Errorf("write procedure %d succeeded", proc)
	}
	return nil
}

// checkCall checks the reply to a call of proc of prog with args.
func checkCall(out []byte, xid, prog, proc uint32, args []byte) error {
	rec, err := splitReply(out)
	if err != nil {
		return err
	}
	stat, res, denied, err := replyStat(rec, xid)
	if err != nil || denied {
		return err
	}
	table := 22
	if prog == progMount {
		table = 6
	}
	switch {
	case proc >= uint32(table):
		if stat != acceptProcUnavail {
			return fmt.Errorf("procedure %d of %d: accept_stat %d, want PROC_UNAVAIL", proc, prog, stat)
		}
	case stat == acceptSuccess:
		return checkResults(prog, proc, args, res)
	case stat != acceptGarbageArgs:
		return fmt.Errorf("procedure %d of %d: accept_stat %d", proc, prog, stat)
	}
	return nil
}

// FuzzProcedure runs one MOUNT (mount) or NFSv3 procedure with the given
// argument bytes, AUTH_SYS, against the fixture store, and checks the
// reply. The seeds name fixture nodes of every kind, so that mutations
// reach past handle resolution.
func FuzzProcedure(f *testing.F) {
	fx := newFuzzFixture(f)
	for _, s := range fx.procedureSeeds() {
		f.Add(s.mount, s.proc, s.args)
	}
	f.Fuzz(func(t *testing.T, mount bool, proc uint32, args []byte) {
		prog := uint32(progNFS)
		if mount {
			prog = progMount
		}
		xid, rec := fx.call(prog, proc, args)
		out := fx.dispatch(t, rec)
		if err := checkCall(out, xid, prog, proc, args); err != nil {
			t.Fatalf("program %d procedure %d, arguments %x: %v", prog, proc, args, err)
		}
	})
}

type procedureSeed struct {
	mount bool
	proc  uint32
	args  []byte
}

// enc builds XDR with the writer's methods.
func enc(build func(w *xdrWriter)) []byte {
	var w xdrWriter
	build(&w)
	return w.b
}

func (fx *fuzzFixture) procedureSeeds() []procedureSeed {
	var seeds []procedureSeed
	nfs := func(proc uint32, args []byte) { seeds = append(seeds, procedureSeed{false, proc, args}) }
	mnt := func(proc uint32, args []byte) { seeds = append(seeds, procedureSeed{true, proc, args}) }
	all := [][]byte{fx.root, fx.dir, fx.keepDir, fx.file, fx.bigFile, fx.exec, fx.symlink, fx.emptyFile}
	dirs := [][]byte{fx.root, fx.dir, fx.keepDir}
	nfs(0, nil)
	nfs(22, nil)
	nfs(math.MaxUint32, nil)
	for _, h := range all {
		for _, proc := range []uint32{1, 5, 18, 19, 20} { // GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF
			nfs(proc, fhArgs(h))
		}
		nfs(4, enc(func(w *xdrWriter) { w.opaque(h); w.u32(0x3f) }))
		nfs(6, readArgs(h, 0, 1<<20))
		nfs(6, readArgs(h, 1, 10))
		nfs(6, readArgs(h, math.MaxUint64, math.MaxUint32))
		nfs(2, enc(func(w *xdrWriter) { w.opaque(h); emptySattr3(w); w.u32(0) }))
		nfs(7, enc(func(w *xdrWriter) { w.opaque(h); w.u64(0); w.u32(3); w.u32(2); w.string("abc") }))
		nfs(21, enc(func(w *xdrWriter) { w.opaque(h); w.u64(0); w.u32(0) }))
		nfs(15, enc(func(w *xdrWriter) { w.opaque(h); w.opaque(fx.dir); w.string("x") }))
	}
	for _, d := range dirs {
		for _, name := range []string{"keep", ".keep", "aa", ".", "..", "nope", storetest.RootBlobA, strings.Repeat("n", 256)} {
			nfs(3, enc(func(w *xdrWriter) { w.opaque(d); w.string(name) }))
		}
		nfs(3, enc(func(w *xdrWriter) { w.opaque(d); w.u32(math.MaxUint32); w.string("x") }))
		for _, proc := range []uint32{8, 9, 11, 12, 13} {
			nfs(proc, enc(func(w *xdrWriter) { w.opaque(d); w.string("new"); w.u32(0); emptySattr3(w) }))
		}
		nfs(10, enc(func(w *xdrWriter) { w.opaque(d); w.string("l"); emptySattr3(w); w.string("target") }))
		nfs(14, enc(func(w *xdrWriter) { w.opaque(d); w.string("keep"); w.opaque(fx.root); w.string("x") }))
		for _, plus := range []bool{false, true} {
			proc := uint32(16)
			if plus {
				proc = 17
			}
			for _, cookie := range []uint64{0, 1, 2, 3, 1000, math.MaxUint64} {
				for _, maxcount := range []uint32{0, 84, 107, 108, 140, 400, 8192, math.MaxUint32} {
					nfs(proc, readdirArgs(d, cookie, maxcount, plus))
				}
			}
		}
	}
	// The review's case: every maxcount up to 84 with a cookie past the end.
	for maxcount := range uint32(85) {
		nfs(16, readdirArgs(fx.dir, 1000, maxcount, false))
		nfs(17, readdirArgs(fx.dir, 1000, maxcount, true))
	}
	// Handles that name nothing, and malformed ones.
	nfs(1, fhArgs(bytes.Repeat([]byte{3}, 41)))
	nfs(1, fhArgs(make([]byte, 65)))
	nfs(1, fhArgs(nil))
	nfs(1, []byte{0, 0})

	mnt(0, nil)
	for _, p := range []string{"/", "", "/" + storetest.RootComplicated, "/" + storetest.RootComplicated + "/keep", storetest.RootBlobA, "/nope", strings.Repeat("/a", mntPathLen/2), strings.Repeat("x", mntPathLen+1)} {
		mnt(1, enc(func(w *xdrWriter) { w.string(p) }))
		mnt(3, enc(func(w *xdrWriter) { w.string(p) }))
	}
	// The review's case: a MNT whose dirpath claims 0xF0000000 bytes.
	mnt(1, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'})
	mnt(1, []byte{0xf0, 0, 0, 0})
	mnt(2, nil)
	mnt(4, nil)
	mnt(5, nil)
	mnt(6, nil)
	return seeds
}

// FuzzRPCRecord reads a connection's byte stream as the record layer
// does: records (at most MaxRecordSize), call headers, credentials; and
// dispatches each call. Every call gets exactly one well-formed reply
// with the answer its header calls for; anything else gets none.
func FuzzRPCRecord(f *testing.F) {
	fx := newFuzzFixture(f)
	mark := func(rec []byte) []byte {
		b := append(make([]byte, 4), rec...)
		setRecordMark(b)
		return b
	}
	for _, g := range garbage {
		if g.rec != nil {
			f.Add(mark(g.rec))
		} else {
			f.Add(g.raw)
		}
	}
	cred := authSysCredTest()
	f.Add(mark(callRecord(1, rpcVersion, progNFS, 3, 0, authNone, nil, nil)))
	f.Add(mark(callRecord(2, rpcVersion, progNFS, 3, 1, authSys, cred, fhArgs(fx.dir))))
	f.Add(mark(callRecord(3, rpcVersion, progMount, 3, 1, authSys, cred, enc(func(w *xdrWriter) { w.string("/") }))))
	f.Add(mark(callRecord(4, rpcVersion, progMount, 3, 1, authNone, nil, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'})))
	f.Add(mark(callRecord(5, rpcVersion, progNFS, 3, 16, authSys, cred, readdirArgs(fx.dir, 1000, 0, false))))
	f.Add(append(mark(callRecord(6, rpcVersion, progNFS, 3, 0, authNone, nil, nil)), mark(callRecord(7, rpcVersion, progNFS, 3, 1, authNone, nil, fhArgs(fx.root)))...))
	// One call in two fragments.
	whole := callRecord(8, rpcVersion, progNFS, 3, 1, authNone, nil, fhArgs(fx.file))
	frag := append(binary32(uint32(10)), whole[:10]...)
	f.Add(append(frag, append(binary32(1<<31|uint32(len(whole)-10)), whole[10:]...)...))
	// AUTH_SYS at its limits: a 255-byte machine name and 16 gids.
	full := enc(func(w *xdrWriter) {
		w.u32(0)
		w.string(strings.Repeat("m", 255))
		w.u32(0)
		w.u32(0)
		w.u32(16)
		for range 16 {
			w.u32(1)
		}
	})
	f.Add(mark(callRecord(9, rpcVersion, progNFS, 3, 0, authSys, full, nil)))

	max := fx.s.opts.MaxRecordSize
	f.Fuzz(func(t *testing.T, stream []byte) {
		br := bufio.NewReader(bytes.NewReader(stream))
		for {
			rec, err := readRecord(br, nil, max)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errRecordTooLarge) {
					t.Fatalf("readRecord: %v", err)
				}
				return
			}
			if len(rec) > max {
				t.Fatalf("record of %d bytes, limit %d", len(rec), max)
			}
			cl, perr := parseCall(rec)
			if err := checkHeader(rec, cl, perr); err != nil {
				t.Fatalf("record %x: %v", rec, err)
			}
			out := fx.dispatch(t, rec)
			if err := checkDispatched(out, cl, perr); err != nil {
				t.Fatalf("record %x: %v", rec, err)
			}
		}
	})
}

func binary32(v uint32) []byte { return (&xdrWriter{}).u32s(v) }

// checkHeader checks parseCall's result against the record.
func checkHeader(rec []byte, cl *call, err error) error {
	switch {
	case cl == nil:
		if err == nil || len(rec) >= 8 {
			return fmt.Errorf("no call and error %v for %d bytes", err, len(rec))
		}
		return nil
	case err != nil:
		return nil
	}
	if len(cl.cred) > maxAuthBytes {
		return fmt.Errorf("credential of %d bytes", len(cl.cred))
	}
	// The header is 10 words, the credential and verifier bodies padded;
	// the arguments are the rest of the record, not a copy.
	if len(cl.args) > len(rec)-40-len(cl.cred) {
		return fmt.Errorf("%d bytes of arguments in a record of %d", len(cl.args), len(rec))
	}
	if len(cl.args) > 0 && &cl.args[len(cl.args)-1] != &rec[len(rec)-1] {
		return errors.New("arguments are not the record's tail")
	}
	if cl.flavor == authSys {
		if a, err := parseAuthSys(cl.cred); err == nil && len(a.machine) > 255 {
			return fmt.Errorf("AUTH_SYS machine name of %d bytes", len(a.machine))
		}
	}
	return nil
}

// checkDispatched checks what dispatch wrote for a record whose header
// parsed as cl, err.
func checkDispatched(out []byte, cl *call, err error) error {
	if cl == nil || errors.Is(err, errNotCall) {
		if len(out) != 0 {
			return fmt.Errorf("reply %x to a record that is no call", out)
		}
		return nil
	}
	rec, rerr := splitReply(out)
	if rerr != nil {
		return rerr
	}
	stat, _, denied, rerr := replyStat(rec, cl.xid)
	if rerr != nil {
		return rerr
	}
	authOK := cl.flavor == authNone
	if cl.flavor == authSys {
		_, aerr := parseAuthSys(cl.cred)
		authOK = aerr == nil
	}
	switch {
	case err != nil:
		if denied || stat != acceptGarbageArgs {
			return fmt.Errorf("malformed header answered %x", rec)
		}
	case cl.rpcvers != rpcVersion || !authOK:
		if !denied {
			return fmt.Errorf("RPC version %d, flavor %d answered %x", cl.rpcvers, cl.flavor, rec)
		}
	case denied:
		return fmt.Errorf("call denied: %x", rec)
	case cl.prog != progNFS && cl.prog != progMount:
		if stat != acceptProgUnavail {
			return fmt.Errorf("program %d answered %x", cl.prog, rec)
		}
	case cl.vers != 3:
		if stat != acceptProgMismatch {
			return fmt.Errorf("version %d answered %x", cl.vers, rec)
		}
	default:
		return checkCall(out, cl.xid, cl.prog, cl.proc, cl.args)
	}
	return nil
}

// FuzzXDR drives the XDR reader with a program of operations (ops) over
// data, and compares every result with a model that does its arithmetic
// in uint64: values, what is left, and that the first failure sticks.
func FuzzXDR(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4}, []byte{0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{3, 0xff, 3, 2, 2, 0}, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'})
	f.Add([]byte{4, 4, 4}, enc(func(w *xdrWriter) { w.string(strings.Repeat("a", 256)); w.string("ok") }))
	f.Add([]byte{2, 0xff, 0xff, 2, 0x7f, 0xff}, make([]byte, 64))
	f.Add([]byte{5, 5}, []byte("round trip"))
	f.Fuzz(func(t *testing.T, ops, data []byte) {
		r := xdrReader{b: data}
		m := xdrModel{b: data}
		for i := 0; i < len(ops); i++ {
			arg := 0
			if i+2 < len(ops) {
				arg = int(int16(uint16(ops[i+1])<<8 | uint16(ops[i+2])))
			}
			var got, want string
			switch ops[i] % 6 {
			case 0:
				got, want = fmt.Sprint(r.u32()), fmt.Sprint(m.u32())
			case 1:
				got, want = fmt.Sprint(r.u64()), fmt.Sprint(m.u64())
			case 2:
				n := arg
				switch arg {
				case math.MinInt16:
					n = math.MaxInt
				case math.MaxInt16:
					n = math.MaxInt32
				}
				got, want = fmt.Sprintf("%x", r.fixed(n)), fmt.Sprintf("%x", m.fixed(n))
				i += 2
			case 3:
				max := max(arg, 0)
				got, want = fmt.Sprintf("%x", r.opaque(max)), fmt.Sprintf("%x", m.opaque(max))
				i += 2
			case 4: // a name, as LOOKUP reads it: any length the data holds
				got, want = fmt.Sprintf("%x", r.opaque(len(r.b))), fmt.Sprintf("%x", m.opaque(len(m.b)))
			case 5:
				// What the writer encodes, the reader decodes.
				p := data[:min(len(data), max(arg, 0))]
				var w xdrWriter
				w.opaque(p)
				w.string(string(p))
				if len(w.b) != 2*opaqueLen(len(p)) {
					t.Fatalf("opaque of %d bytes encoded in %d", len(p), len(w.b))
				}
				rr := xdrReader{b: w.b}
				if a, b := rr.opaque(len(p)), rr.opaque(len(p)); rr.err != nil || !bytes.Equal(a, p) || !bytes.Equal(b, p) || len(rr.b) != 0 {
					t.Fatalf("round trip of %x: %x %x %v", p, a, b, rr.err)
				}
				i += 2
				continue
			}
			if got != want || (r.err != nil) != m.failed || len(r.b) != len(m.b) {
				t.Fatalf("op %d (%d, arg %d): got %s, err %v, %d left; model %s, failed %v, %d left",
					i, ops[i]%6, arg, got, r.err, len(r.b), want, m.failed, len(m.b))
			}
		}
	})
}

// xdrModel is the XDR reader's specification, written without int
// arithmetic that could overflow.
type xdrModel struct {
	b      []byte
	failed bool
}

func (m *xdrModel) fail() { m.failed, m.b = true, nil }

func (m *xdrModel) take(n uint64, keep uint64) []byte {
	if m.failed || n > uint64(len(m.b)) || keep > n {
		m.fail()
		return nil
	}
	v := m.b[:keep:keep]
	m.b = m.b[n:]
	return v
}

func (m *xdrModel) u32() uint32 {
	v := m.take(4, 4)
	if v == nil {
		return 0
	}
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

func (m *xdrModel) u64() uint64 {
	v := m.take(8, 8)
	if v == nil {
		return 0
	}
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x
}

func (m *xdrModel) fixed(n int) []byte {
	if n < 0 {
		m.fail()
		return nil
	}
	return m.take((uint64(n)+3)/4*4, uint64(n))
}

func (m *xdrModel) opaque(max int) []byte {
	n := m.u32()
	if m.failed || uint64(n) > uint64(max) {
		m.fail()
		return nil
	}
	return m.take((uint64(n)+3)/4*4, uint64(n))
}

package nfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/storefs/storefs/vfs/vfstest"
)

// testClient is a minimal NFSv3 client over one TCP connection, written for
// the tests from RFC 1813: it walks paths with LOOKUP as a kernel would
// (".." and symlinks resolved on the client side), reads with READ, lists
// with READDIR or READDIRPLUS, and sends every write procedure.
type testClient struct {
	addr string
	mu   sync.Mutex
	nc   net.Conn
	br   *bufio.Reader
	xid  uint32
	root []byte
}

var (
	_ vfstest.HandleClient  = (*testClient)(nil)
	_ vfstest.GarbageSender = (*testClient)(nil)
)

// rpcError is a call the server did not accept.
type rpcError struct {
	denied bool
	stat   uint32
	body   []byte
}

func (e *rpcError) Error() string {
	if e.denied {
		return fmt.Sprintf("rpc call denied (reject_stat %d, %x)", e.stat, e.body)
	}
	return fmt.Sprintf("rpc call not accepted (accept_stat %d, %x)", e.stat, e.body)
}

// nfsError is a non-OK nfsstat3; Unwrap gives the errno it stands for.
type nfsError struct {
	proc   string
	status uint32
}

func (e *nfsError) Error() string { return fmt.Sprintf("%s: nfsstat3 %d", e.proc, e.status) }
func (e *nfsError) Unwrap() error {
	switch e.status {
	case nfs3ErrBadHandle:
		return syscall.EBADF
	case nfs3ErrTooSmall:
		return syscall.ERANGE
	case nfs3ErrNotSupp:
		return syscall.ENOTSUP
	case nfs3ErrServerFault:
		return syscall.EIO
	case nfs3ErrNameLong:
		return syscall.ENAMETOOLONG
	case nfs3ErrStale:
		return syscall.ESTALE
	}
	return syscall.Errno(e.status)
}

func dialTest(addr string) (*testClient, error) {
	c := &testClient{addr: addr}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.nc, c.br = nc, bufio.NewReader(nc)
	var w xdrWriter
	w.string("/")
	body, err := c.call(progMount, 3, 1, w.b)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("MNT: %w", err)
	}
	r := xdrReader{b: body}
	if st := r.u32(); st != 0 {
		nc.Close()
		return nil, fmt.Errorf("MNT: status %d", st)
	}
	c.root = r.opaque(64)
	return c, r.err
}

func (c *testClient) Close() error { return c.nc.Close() }

// authSysCredTest is an AUTH_SYS credential for uid 0.
func authSysCredTest() []byte {
	var w xdrWriter
	w.u32(0)
	w.string("test")
	w.u32(0)
	w.u32(0)
	w.u32(0)
	return w.b
}

// callRaw sends one call with the given credential and returns the reply
// after the xid.
func (c *testClient) callRaw(prog, vers, proc, flavor uint32, cred, args []byte) (*xdrReader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.xid++
	var w xdrWriter
	w.u32(0)
	w.u32(c.xid)
	w.u32(msgCall)
	w.u32(rpcVersion)
	w.u32(prog)
	w.u32(vers)
	w.u32(proc)
	w.u32(flavor)
	w.opaque(cred)
	w.u32(authNone)
	w.u32(0)
	w.b = append(w.b, args...)
	setRecordMark(w.b)
	c.nc.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.nc.Write(w.b); err != nil {
		return nil, err
	}
	rec, err := readRecord(c.br, nil, 64<<20)
	if err != nil {
		return nil, err
	}
	r := &xdrReader{b: rec}
	if xid := r.u32(); xid != c.xid {
		return nil, fmt.Errorf("reply xid %d, want %d", xid, c.xid)
	}
	if mt := r.u32(); mt != msgReply {
		return nil, fmt.Errorf("message type %d, want a reply", mt)
	}
	return r, r.err
}

// call sends a call with AUTH_SYS and returns the SUCCESS results.
func (c *testClient) call(prog, vers, proc uint32, args []byte) ([]byte, error) {
	r, err := c.callRaw(prog, vers, proc, authSys, authSysCredTest(), args)
	if err != nil {
		return nil, err
	}
	if rs := r.u32(); rs != replyAccepted {
		return nil, &rpcError{denied: true, stat: r.u32(), body: r.b}
	}
	r.u32() // verifier
	r.opaque(400)
	if st := r.u32(); st != acceptSuccess {
		return nil, &rpcError{stat: st, body: r.b}
	}
	return r.b, r.err
}

// nfs calls an NFSv3 procedure and returns a reader after an OK status,
// or an *nfsError.
func (c *testClient) nfs(proc uint32, name string, args []byte) (*xdrReader, error) {
	body, err := c.call(progNFS, 3, proc, args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := &xdrReader{b: body}
	if st := r.u32(); st != nfs3OK {
		return nil, &nfsError{proc: name, status: st}
	}
	return r, r.err
}

// testAttr is a decoded fattr3.
type testAttr struct {
	typ             uint32
	mode            uint32
	nlink, uid, gid uint32
	size, used      uint64
	fileid          uint64
	mtime           time.Time
}

func readFattr(r *xdrReader) testAttr {
	var a testAttr
	a.typ, a.mode, a.nlink, a.uid, a.gid = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	a.size, a.used = r.u64(), r.u64()
	r.u64() // rdev
	r.u64() // fsid
	a.fileid = r.u64()
	r.u64() // atime
	sec, nsec := r.u32(), r.u32()
	a.mtime = time.Unix(int64(sec), int64(nsec))
	r.u64() // ctime
	return a
}

func readPostOp(r *xdrReader) (testAttr, bool) {
	if r.u32() == 0 {
		return testAttr{}, false
	}
	return readFattr(r), true
}

func (a testAttr) stat() vfstest.Stat {
	mode := fs.FileMode(a.mode & 0o777)
	switch a.typ {
	case nf3Dir:
		mode |= fs.ModeDir
	case nf3Lnk:
		mode |= fs.ModeSymlink
	}
	return vfstest.Stat{Mode: mode, Size: int64(a.size), Ino: a.fileid, Nlink: uint64(a.nlink), UID: a.uid, GID: a.gid, Blocks: int64((a.used + 511) / 512), Mtime: a.mtime}
}

func fhArgs(fh []byte) []byte {
	var w xdrWriter
	w.opaque(fh)
	return w.b
}

func (c *testClient) getattr(fh []byte) (testAttr, error) {
	r, err := c.nfs(1, "GETATTR", fhArgs(fh))
	if err != nil {
		return testAttr{}, err
	}
	a := readFattr(r)
	return a, r.err
}

func (c *testClient) lookup(dir []byte, name string) ([]byte, testAttr, error) {
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	r, err := c.nfs(3, "LOOKUP", w.b)
	if err != nil {
		return nil, testAttr{}, err
	}
	fh := r.opaque(64)
	a, ok := readPostOp(r)
	if !ok {
		return nil, testAttr{}, errors.New("LOOKUP: no attributes")
	}
	return fh, a, r.err
}

func (c *testClient) readlinkFH(fh []byte) (string, error) {
	r, err := c.nfs(5, "READLINK", fhArgs(fh))
	if err != nil {
		return "", err
	}
	readPostOp(r)
	t := r.opaque(4096)
	return string(t), r.err
}

// walk resolves path from the root with LOOKUP, as a kernel does.
func (c *testClient) walk(path string, follow bool) ([]byte, testAttr, error) {
	stack := [][]byte{c.root}
	a, err := c.getattr(c.root)
	if err != nil {
		return nil, a, err
	}
	comps := strings.Split(path, "/")
	links := 0
	for i := 0; i < len(comps); i++ {
		comp := comps[i]
		switch comp {
		case "", ".":
			continue
		case "..":
			if a.typ != nf3Dir {
				return nil, a, syscall.ENOTDIR
			}
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			if a, err = c.getattr(stack[len(stack)-1]); err != nil {
				return nil, a, err
			}
			continue
		}
		if a.typ != nf3Dir {
			return nil, a, syscall.ENOTDIR
		}
		fh, na, err := c.lookup(stack[len(stack)-1], comp)
		if err != nil {
			return nil, na, err
		}
		last := i == len(comps)-1
		if na.typ == nf3Lnk && (!last || follow) {
			if links++; links > 40 {
				return nil, na, syscall.ELOOP
			}
			target, err := c.readlinkFH(fh)
			if err != nil {
				return nil, na, err
			}
			if strings.HasPrefix(target, "/") {
				in, ok := strings.CutPrefix(target, "/nix/store/")
				if !ok {
					return nil, na, syscall.ENOENT
				}
				stack, target = stack[:1], in
			}
			comps, i = append(strings.Split(target, "/"), comps[i+1:]...), -1
			if a, err = c.getattr(stack[len(stack)-1]); err != nil {
				return nil, a, err
			}
			continue
		}
		stack = append(stack, fh)
		a = na
	}
	return stack[len(stack)-1], a, nil
}

func (c *testClient) Stat(path string) (vfstest.Stat, error) {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return vfstest.Stat{}, err
	}
	a, err := c.getattr(fh)
	return a.stat(), err
}

func (c *testClient) Lstat(path string) (vfstest.Stat, error) {
	fh, _, err := c.walk(path, false)
	if err != nil {
		return vfstest.Stat{}, err
	}
	a, err := c.getattr(fh)
	return a.stat(), err
}

// ReadDir lists with READDIRPLUS, or with READDIR (and a LOOKUP per entry
// for its type) when batch is odd, sizing the reply for about batch
// entries.
func (c *testClient) ReadDir(path string, batch int) ([]vfstest.DirEntry, error) {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return nil, err
	}
	plus := batch%2 == 0
	maxcount := uint32(32 << 10)
	if batch > 0 {
		per := 80
		if plus {
			per = 240
		}
		maxcount = uint32(readdirOverhead + batch*per)
	}
	var out []vfstest.DirEntry
	var cookie uint64
	var verf [8]byte
	for {
		var w xdrWriter
		w.opaque(fh)
		w.u64(cookie)
		w.b = append(w.b, verf[:]...)
		proc, name := uint32(16), "READDIR"
		if plus {
			proc, name = 17, "READDIRPLUS"
			w.u32(maxcount / 8)
		}
		w.u32(maxcount)
		r, err := c.nfs(proc, name, w.b)
		if err != nil {
			return out, err
		}
		readPostOp(r)
		copy(verf[:], r.fixed(8))
		n := 0
		for r.u32() == 1 {
			n++
			r.u64() // fileid
			ename := string(r.opaque(1024))
			cookie = r.u64()
			var typ fs.FileMode
			if plus {
				a, ok := readPostOp(r)
				if r.u32() == 1 {
					r.opaque(64)
				}
				if ok {
					typ = a.stat().Mode.Type()
				} else if ename != ".." {
					return out, fmt.Errorf("READDIRPLUS: no attributes for %q", ename)
				} else {
					typ = fs.ModeDir
				}
			} else if ename != "." && ename != ".." {
				_, a, err := c.lookup(fh, ename)
				if err != nil {
					return out, err
				}
				typ = a.stat().Mode.Type()
			} else {
				typ = fs.ModeDir
			}
			out = append(out, vfstest.DirEntry{Name: ename, Type: typ})
		}
		eof := r.u32() == 1
		if r.err != nil {
			return out, fmt.Errorf("%s reply: %w", name, r.err)
		}
		if eof {
			return out, nil
		}
		if n == 0 {
			return out, fmt.Errorf("%s: no entries and no eof", name)
		}
	}
}

func (c *testClient) readFH(fh []byte, off uint64, count uint32) ([]byte, bool, error) {
	var w xdrWriter
	w.opaque(fh)
	w.u64(off)
	w.u32(count)
	r, err := c.nfs(6, "READ", w.b)
	if err != nil {
		return nil, false, err
	}
	readPostOp(r)
	n := r.u32()
	eof := r.u32() == 1
	data := r.opaque(1 << 30)
	if r.err == nil && uint32(len(data)) != n {
		return nil, false, fmt.Errorf("READ: count %d but %d bytes", n, len(data))
	}
	return data, eof, r.err
}

func (c *testClient) ReadFile(path string) ([]byte, error) {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		data, eof, err := c.readFH(fh, uint64(len(out)), 1<<20)
		if err != nil {
			return out, err
		}
		out = append(out, data...)
		if eof {
			return out, nil
		}
		if len(data) == 0 {
			return out, errors.New("READ: no data and no eof")
		}
	}
}

func (c *testClient) ReadAt(path string, p []byte, off int64) (int, error) {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		data, eof, err := c.readFH(fh, uint64(off)+uint64(n), uint32(min(len(p)-n, 1<<20)))
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data)
		if eof {
			break
		}
		if len(data) == 0 {
			return n, errors.New("READ: no data and no eof")
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (c *testClient) Readlink(path string) (string, error) {
	fh, _, err := c.walk(path, false)
	if err != nil {
		return "", err
	}
	return c.readlinkFH(fh)
}

func (c *testClient) Getxattr(string, string) ([]byte, error) { return nil, syscall.ENOTSUP }

// parent walks to the parent of path and returns its handle and the base
// name.
func (c *testClient) parent(path string) ([]byte, string, error) {
	dir, base := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, base = path[:i], path[i+1:]
	}
	fh, _, err := c.walk(dir, true)
	return fh, base, err
}

// emptySattr3 sets nothing.
func emptySattr3(w *xdrWriter) {
	for range 6 {
		w.u32(0)
	}
}

func (c *testClient) Create(path string) error {
	fh, base, err := c.parent(path)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(fh)
	w.string(base)
	w.u32(0) // UNCHECKED
	emptySattr3(&w)
	_, err = c.nfs(8, "CREATE", w.b)
	return err
}

func (c *testClient) Mkdir(path string) error {
	fh, base, err := c.parent(path)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(fh)
	w.string(base)
	emptySattr3(&w)
	_, err = c.nfs(9, "MKDIR", w.b)
	return err
}

func (c *testClient) Rename(oldpath, newpath string) error {
	from, fbase, err := c.parent(oldpath)
	if err != nil {
		return err
	}
	to, tbase, err := c.parent(newpath)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(from)
	w.string(fbase)
	w.opaque(to)
	w.string(tbase)
	_, err = c.nfs(14, "RENAME", w.b)
	return err
}

func (c *testClient) Remove(path string) error {
	fh, base, err := c.parent(path)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(fh)
	w.string(base)
	_, err = c.nfs(12, "REMOVE", w.b)
	return err
}

func (c *testClient) setattr(path string, sattr func(w *xdrWriter)) error {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(fh)
	sattr(&w)
	w.u32(0) // no guard
	_, err = c.nfs(2, "SETATTR", w.b)
	return err
}

func (c *testClient) Chmod(path string, mode fs.FileMode) error {
	return c.setattr(path, func(w *xdrWriter) {
		w.u32(1)
		w.u32(uint32(mode.Perm()))
		for range 5 {
			w.u32(0)
		}
	})
}

func (c *testClient) Truncate(path string, size int64) error {
	return c.setattr(path, func(w *xdrWriter) {
		w.u32(0)
		w.u32(0)
		w.u32(0)
		w.u32(1)
		w.u64(uint64(size))
		w.u32(0)
		w.u32(0)
	})
}

func (c *testClient) WriteAt(path string, p []byte, off int64) error {
	fh, _, err := c.walk(path, true)
	if err != nil {
		return err
	}
	var w xdrWriter
	w.opaque(fh)
	w.u64(uint64(off))
	w.u32(uint32(len(p)))
	w.u32(2) // FILE_SYNC
	w.opaque(p)
	_, err = c.nfs(7, "WRITE", w.b)
	return err
}

func (c *testClient) Handle(path string) ([]byte, error) {
	fh, _, err := c.walk(path, false)
	return fh, err
}

func (c *testClient) StatHandle(h []byte) (vfstest.Stat, error) {
	a, err := c.getattr(h)
	return a.stat(), err
}

// SendGarbage sends malformed and unwelcome calls on other connections
// and checks the answers; the suite then checks that this client is still
// served.
func (c *testClient) SendGarbage() error {
	for _, g := range garbage {
		if err := g.send(c.addr); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
	}
	return nil
}

// garbageCase is one hostile input and what must happen to it.
type garbageCase struct {
	name string
	rec  []byte // sent as one record (nil: raw is sent as is)
	raw  []byte
	// want checks the reply (nil: the server must close the connection
	// or send nothing).
	want func(reply []byte) error
}

func (g garbageCase) send(addr string) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(time.Minute))
	msg := g.raw
	if g.rec != nil {
		msg = append(make([]byte, 4), g.rec...)
		setRecordMark(msg)
	}
	if _, err := nc.Write(msg); err != nil {
		return err
	}
	if g.want == nil {
		// Either the connection is closed or nothing comes; a NULL on the
		// same connection shows which.
		return nil
	}
	rec, err := readRecord(bufio.NewReader(nc), nil, 1<<20)
	if err != nil {
		return fmt.Errorf("no reply: %w", err)
	}
	return g.want(rec)
}

// callRecord builds a call record.
func callRecord(xid, rpcvers, prog, vers, proc, flavor uint32, cred, args []byte) []byte {
	var w xdrWriter
	w.u32(xid)
	w.u32(msgCall)
	w.u32(rpcvers)
	w.u32(prog)
	w.u32(vers)
	w.u32(proc)
	w.u32(flavor)
	w.opaque(cred)
	w.u32(0)
	w.u32(0)
	w.b = append(w.b, args...)
	return w.b
}

// wantWords checks a reply's words after the xid.
func wantWords(xid uint32, words ...uint32) func([]byte) error {
	return func(rec []byte) error {
		var w xdrWriter
		w.u32(xid)
		for _, v := range words {
			w.u32(v)
		}
		if !bytes.Equal(rec, w.b) {
			return fmt.Errorf("reply %x, want %x", rec, w.b)
		}
		return nil
	}
}

var garbage = []garbageCase{
	{name: "random bytes", rec: bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 30)},
	{name: "short record", rec: []byte{1, 2, 3}},
	{name: "header cut short", rec: []byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1},
		want: wantWords(9, msgReply, replyAccepted, 0, 0, acceptGarbageArgs)},
	{name: "RPC version 3", rec: callRecord(10, 3, progNFS, 3, 0, authNone, nil, nil),
		want: wantWords(10, msgReply, replyDenied, rejectRPCMismatch, 2, 2)},
	{name: "NFSv4", rec: callRecord(11, 2, progNFS, 4, 0, authNone, nil, nil),
		want: wantWords(11, msgReply, replyAccepted, 0, 0, acceptProgMismatch, 3, 3)},
	{name: "NFSv2", rec: callRecord(12, 2, progNFS, 2, 1, authNone, nil, nil),
		want: wantWords(12, msgReply, replyAccepted, 0, 0, acceptProgMismatch, 3, 3)},
	{name: "NFS_ACL", rec: callRecord(13, 2, progACL, 3, 0, authNone, nil, nil),
		want: wantWords(13, msgReply, replyAccepted, 0, 0, acceptProgUnavail)},
	{name: "unknown program", rec: callRecord(14, 2, 123456, 1, 0, authNone, nil, nil),
		want: wantWords(14, msgReply, replyAccepted, 0, 0, acceptProgUnavail)},
	{name: "unknown procedure", rec: callRecord(15, 2, progNFS, 3, 22, authNone, nil, nil),
		want: wantWords(15, msgReply, replyAccepted, 0, 0, acceptProcUnavail)},
	{name: "unknown MOUNT procedure", rec: callRecord(16, 2, progMount, 3, 6, authNone, nil, nil),
		want: wantWords(16, msgReply, replyAccepted, 0, 0, acceptProcUnavail)},
	{name: "RPCSEC_GSS", rec: callRecord(17, 2, progNFS, 3, 0, 6, []byte{1, 2, 3, 4}, nil),
		want: wantWords(17, msgReply, replyDenied, rejectAuthError, authTooWeak)},
	{name: "malformed AUTH_SYS", rec: callRecord(18, 2, progNFS, 3, 0, authSys, []byte{0, 0, 0, 1, 0, 0, 1, 0}, nil),
		want: wantWords(18, msgReply, replyDenied, rejectAuthError, authBadCred)},
	{name: "GETATTR without a handle", rec: callRecord(19, 2, progNFS, 3, 1, authNone, nil, nil),
		want: wantWords(19, msgReply, replyAccepted, 0, 0, acceptGarbageArgs)},
	{name: "GETATTR with a 65-byte handle", rec: callRecord(20, 2, progNFS, 3, 1, authNone, nil, fhArgs(make([]byte, 65))),
		want: wantWords(20, msgReply, replyAccepted, 0, 0, acceptGarbageArgs)},
	{name: "READ with a stale handle", rec: callRecord(21, 2, progNFS, 3, 6, authNone, nil, append(fhArgs(bytes.Repeat([]byte{4}, 42)), make([]byte, 12)...)),
		want: wantWords(21, msgReply, replyAccepted, 0, 0, acceptSuccess, nfs3ErrStale, 0)},
	{name: "LOOKUP with a name of 4 GiB", rec: callRecord(23, 2, progNFS, 3, 3, authNone, nil, append(fhArgs(bytes.Repeat([]byte{4}, 42)), 0xff, 0xff, 0xff, 0xff, 'a', 0, 0, 0)),
		want: wantWords(23, msgReply, replyAccepted, 0, 0, acceptGarbageArgs)},
	{name: "MNT with a dirpath of 0xF0000000 bytes", rec: callRecord(24, 2, progMount, 3, 1, authNone, nil, []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'}),
		want: wantWords(24, msgReply, replyAccepted, 0, 0, acceptSuccess, nfs3ErrNameLong)},
	{name: "AUTH_SYS with 17 gids", rec: callRecord(25, 2, progNFS, 3, 0, authSys, append((&xdrWriter{}).u32s(0, 0, 0, 0, 17), make([]byte, 4*17)...), nil),
		want: wantWords(25, msgReply, replyDenied, rejectAuthError, authBadCred)},
	{name: "a reply instead of a call", rec: []byte{0, 0, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0}},
	{name: "oversize record", raw: []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}},
	{name: "record cut short", raw: []byte{0x80, 0, 1, 0, 1, 2}},
}

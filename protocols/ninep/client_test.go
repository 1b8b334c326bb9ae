package ninep_test

import (
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"net"
	pathpkg "path"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs/vfstest"
)

// interopConn fixes what github.com/hugelgupf/p9 (v0.4.1, as v0.3.0) sends
// as a client so that it talks to real 9P2000.L servers: its Tversion asks
// for "9P2000.L.Google.7" (plain "9P2000.L" here) and its Tattach carries
// n_uname NoUID (a real uid here). It reassembles the messages the client
// writes in pieces and rewrites those two.
type interopConn struct {
	net.Conn
	uid     uint32
	mu      sync.Mutex
	pending []byte
}

func (c *interopConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, p...)
	for len(c.pending) >= 7 {
		size := int(binary.LittleEndian.Uint32(c.pending))
		if size < 7 || len(c.pending) < size {
			break
		}
		m := c.pending[:size]
		switch m[4] {
		case tversion: // size type tag msize[4] version[s]
			m = frame(tversion, binary.LittleEndian.Uint16(m[5:]), msg(m[7:11]).str("9P2000.L"))
		case tattach: // ... uname[s] aname[s] n_uname[4]
			m = append([]byte(nil), m...)
			binary.LittleEndian.PutUint32(m[len(m)-4:], c.uid)
		}
		if _, err := c.Conn.Write(m); err != nil {
			return 0, err
		}
		c.pending = c.pending[size:]
	}
	return len(p), nil
}

// p9Client is vfstest.Client through the p9 library's client: one
// connection, one attach, paths resolved the way a kernel does (one walk
// per component, symlinks followed by the client).
type p9Client struct {
	t     testing.TB
	addr  string
	c     *p9.Client
	root  p9.File
	msize uint32
}

// dialP9 connects the p9 client to addr, asking for msize and clamping it
// to what the server grants (the library ignores Rversion's msize).
func dialP9(t testing.TB, network, addr string, msize uint32) *p9Client {
	t.Helper()
	probe := dialRaw(t, network, addr)
	granted := probe.mustVersion(msize)
	probe.conn.Close()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p9.NewClient(&interopConn{Conn: conn}, p9.WithMessageSize(granted))
	if err != nil {
		conn.Close()
		t.Fatalf("p9.NewClient: %v", err)
	}
	root, err := c.Attach("")
	if err != nil {
		c.Close()
		t.Fatalf("attach: %v", err)
	}
	pc := &p9Client{t: t, addr: addr, c: c, root: root, msize: granted}
	t.Cleanup(pc.Close)
	return pc
}

func (c *p9Client) Close() { c.c.Close() }

// errnoOf turns the p9 client's errors into syscall.Errno, as the suite
// wants.
func errnoOf(err error) error {
	var e linux.Errno
	if errors.As(err, &e) {
		return syscall.Errno(e)
	}
	return err
}

// node is a walked path: its fid, components and attributes.
type node struct {
	f     p9.File
	comps []string
	qid   p9.QID
	attr  p9.Attr
}

// resolve walks path from the root, following symlinks in every component
// but the last (and the last too if follow), as a kernel resolves paths
// on a mount of the store root: an absolute target under /nix/store/
// restarts at the root. The caller closes node.f.
func (c *p9Client) resolve(path string, follow bool) (node, error) {
	rest := strings.Split(path, "/")
	var comps []string
	links := 0
	for {
		_, f, err := c.root.Walk(comps)
		if err != nil {
			return node{}, errnoOf(err)
		}
		q, _, attr, err := f.GetAttr(p9.AttrMaskAll)
		if err != nil {
			f.Close()
			return node{}, errnoOf(err)
		}
		n := node{f: f, comps: comps, qid: q, attr: attr}
		if attr.Mode.IsSymlink() && (len(rest) > 0 || follow) {
			if links++; links > 40 {
				f.Close()
				return node{}, syscall.ELOOP
			}
			if rest, comps, err = c.followLink(n, rest); err != nil {
				return node{}, err
			}
			continue
		}
		for len(rest) > 0 && rest[0] == "" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return n, nil
		}
		f.Close()
		if !attr.Mode.IsDir() {
			return node{}, syscall.ENOTDIR
		}
		switch rest[0] {
		case ".":
		case "..":
			if len(comps) > 0 {
				comps = comps[:len(comps)-1]
			}
		default:
			comps = append(append([]string(nil), comps...), rest[0])
		}
		rest = rest[1:]
	}
}

// followLink reads the symlink n (and closes it) and returns the
// components still to resolve and the directory to resolve them from.
func (c *p9Client) followLink(n node, rest []string) ([]string, []string, error) {
	target, err := n.f.Readlink()
	n.f.Close()
	if err != nil {
		return nil, nil, errnoOf(err)
	}
	dir := n.comps[:len(n.comps)-1]
	if strings.HasPrefix(target, "/") {
		in, ok := strings.CutPrefix(target, storeclient.StoreDir+"/")
		if !ok {
			return nil, nil, syscall.ENOENT
		}
		dir, target = nil, in
	}
	return append(strings.Split(target, "/"), rest...), append([]string(nil), dir...), nil
}

func toStat(q p9.QID, a p9.Attr) vfstest.Stat {
	mode := a.Mode.OSMode()
	return vfstest.Stat{
		Mode: mode, Size: int64(a.Size), Ino: q.Path, Nlink: uint64(a.NLink),
		UID: uint32(a.UID), GID: uint32(a.GID), Blocks: int64(a.Blocks),
		Mtime: time.Unix(int64(a.MTimeSeconds), int64(a.MTimeNanoSeconds)),
	}
}

func (c *p9Client) stat(path string, follow bool) (vfstest.Stat, error) {
	n, err := c.resolve(path, follow)
	if err != nil {
		return vfstest.Stat{}, err
	}
	defer n.f.Close()
	return toStat(n.qid, n.attr), nil
}

func (c *p9Client) Stat(path string) (vfstest.Stat, error)  { return c.stat(path, true) }
func (c *p9Client) Lstat(path string) (vfstest.Stat, error) { return c.stat(path, false) }

// direntMode is the type of a Linux DT_* value, which is what Rreaddir
// carries (the p9 library calls it a QIDType).
func direntMode(t p9.QIDType) fs.FileMode {
	switch t {
	case 4:
		return fs.ModeDir
	case 10:
		return fs.ModeSymlink
	case 8:
		return 0
	}
	return fs.ModeIrregular
}

// ReadDir reads with Treaddir counts sized for batch entries of the
// longest name, or msize-24 as Linux does.
func (c *p9Client) ReadDir(path string, batch int) ([]vfstest.DirEntry, error) {
	n, err := c.resolve(path, true)
	if err != nil {
		return nil, err
	}
	defer n.f.Close()
	if !n.attr.Mode.IsDir() {
		// Linux refuses getdents on a non-directory without asking the
		// server (p9 would answer Treaddir on a file with EINVAL).
		return nil, syscall.ENOTDIR
	}
	if _, _, err := n.f.Open(p9.ReadOnly); err != nil {
		return nil, errnoOf(err)
	}
	count := c.msize - 24
	if batch > 0 {
		count = min(count, uint32(batch)*(24+255))
	}
	var out []vfstest.DirEntry
	var off uint64
	for {
		es, err := n.f.Readdir(off, count)
		if err != nil {
			return out, errnoOf(err)
		}
		if len(es) == 0 {
			return out, nil
		}
		for _, e := range es {
			out = append(out, vfstest.DirEntry{Name: e.Name, Type: direntMode(e.Type)})
			off = e.Offset
		}
	}
}

func (c *p9Client) open(path string, flags p9.OpenFlags) (p9.File, error) {
	n, err := c.resolve(path, true)
	if err != nil {
		return nil, err
	}
	if _, _, err := n.f.Open(flags); err != nil {
		n.f.Close()
		return nil, errnoOf(err)
	}
	return n.f, nil
}

func (c *p9Client) ReadFile(path string) ([]byte, error) {
	f, err := c.open(path, p9.ReadOnly)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := f.ReadAt(buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return out, errnoOf(err)
		}
	}
}

func (c *p9Client) ReadAt(path string, p []byte, off int64) (int, error) {
	f, err := c.open(path, p9.ReadOnly)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, errnoOf(err)
	}
	return n, err
}

func (c *p9Client) Readlink(path string) (string, error) {
	n, err := c.resolve(path, false)
	if err != nil {
		return "", err
	}
	defer n.f.Close()
	s, err := n.f.Readlink()
	return s, errnoOf(err)
}

// Getxattr uses a raw connection: the p9 client has no xattr support
// (its GetXattr returns ENOSYS without asking the server).
func (c *p9Client) Getxattr(path, name string) ([]byte, error) {
	n, err := c.resolve(path, true)
	if err != nil {
		return nil, err
	}
	n.f.Close()
	raw := dialRaw(c.t, "tcp", c.addr)
	defer raw.conn.Close()
	raw.mustVersion(c.msize)
	if _, err := raw.attach(1, "", "", 0); err != nil {
		return nil, err
	}
	if _, err := raw.walk(1, 2, n.comps...); err != nil {
		return nil, err
	}
	return raw.xattr(2, 3, name)
}

// parent resolves the directory of path and returns it with the last name.
func (c *p9Client) parent(path string) (p9.File, string, error) {
	n, err := c.resolve(pathpkg.Dir(path), true)
	if err != nil {
		return nil, "", err
	}
	return n.f, pathpkg.Base(path), nil
}

func (c *p9Client) Create(path string) error {
	d, name, err := c.parent(path)
	if err != nil {
		return err
	}
	defer d.Close()
	f, _, _, err := d.Create(name, p9.ReadWrite, 0o644, 0, 0)
	if err == nil {
		f.Close()
	}
	return errnoOf(err)
}

func (c *p9Client) Mkdir(path string) error {
	d, name, err := c.parent(path)
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = d.Mkdir(name, 0o755, 0, 0)
	return errnoOf(err)
}

func (c *p9Client) Rename(oldpath, newpath string) error {
	d, name, err := c.parent(oldpath)
	if err != nil {
		return err
	}
	defer d.Close()
	nd, newName, err := c.parent(newpath)
	if err != nil {
		return err
	}
	defer nd.Close()
	return errnoOf(d.RenameAt(name, nd, newName))
}

func (c *p9Client) Remove(path string) error {
	d, name, err := c.parent(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return errnoOf(d.UnlinkAt(name, 0))
}

func (c *p9Client) setattr(path string, valid p9.SetAttrMask, attr p9.SetAttr) error {
	n, err := c.resolve(path, true)
	if err != nil {
		return err
	}
	defer n.f.Close()
	return errnoOf(n.f.SetAttr(valid, attr))
}

func (c *p9Client) Chmod(path string, mode fs.FileMode) error {
	return c.setattr(path, p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: p9.FileMode(mode.Perm())})
}

func (c *p9Client) Truncate(path string, size int64) error {
	return c.setattr(path, p9.SetAttrMask{Size: true}, p9.SetAttr{Size: uint64(size)})
}

// WriteAt tries to open for writing (refused) and, to reach Twrite too,
// writes to the file opened for reading.
func (c *p9Client) WriteAt(path string, p []byte, off int64) error {
	if f, err := c.open(path, p9.WriteOnly); err == nil {
		f.Close()
		return errors.New("open for writing succeeded")
	} else if !errors.Is(err, syscall.EROFS) {
		return err
	}
	f, err := c.open(path, p9.ReadOnly)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(p, off)
	return errnoOf(err)
}

// SendGarbage sends bytes that are no 9P message on a connection of its
// own, and checks that the server closes it.
func (c *p9Client) SendGarbage() error {
	raw := dialRaw(c.t, "tcp", c.addr)
	defer raw.conn.Close()
	if err := raw.send([]byte("\x02\x00\x00\x00GARBAGE that is not 9P at all\xff\xff\xff\xff")); err != nil {
		return err
	}
	if !raw.isClosed() {
		return errors.New("the server kept a connection that sent garbage")
	}
	return nil
}

package ninep

import (
	"io"
	"math"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// Linux dirent types (DT_* in dirent.h). Rreaddir carries these on the wire,
// not QID types, whatever the p9 library names the field.
const (
	dtDir = 4
	dtReg = 8
	dtLnk = 10
)

// v9fsMagic is V9FS_MAGIC, the f_type Linux reports for 9P mounts.
const v9fsMagic = 0x01021997

// Offsets of the "." and ".." entries a directory listing starts with. A
// vfs cookie c is sent as c+dotEntries, so the offset of every entry resumes
// the listing right after it.
const dotEntries = 2

// direntFixedSize is the size of a Linux 9P dirent without its name: qid[13]
// offset[8] type[1] name length[2].
const direntFixedSize = 13 + 8 + 1 + 2

// file is a p9.File: a thin view onto one vfs node for one fid. The library
// owns fids, walks and message encoding; file only asks vfs and translates.
//
// The library keeps one file for every name a walk passed through, so
// what is needed only once the fid is opened lives apart (openFile).
type file struct {
	sess *session
	node vfs.Node
	// open is set once, by Open.
	open atomic.Pointer[openFile]
	// closes is how many Close calls release f. The library hands the same
	// File to every xattr fid walked from it and closes it once per fid, so
	// each successful GetXattr/ListXattrs adds one.
	closes atomic.Int32
}

// openFile is what Open made of a file.
type openFile struct {
	h *vfs.File // a regular file's open handle; nil for a directory
}

var _ p9.File = (*file)(nil)

func newFile(sess *session, n vfs.Node) *file {
	f := &file{sess: sess, node: n}
	f.closes.Store(1)
	return f
}

// qid is the node's 9P identity: qid.path is the vfs inode number (stable
// across restarts and daemons), version 0 (content never changes).
func qid(fs *vfs.FS, n vfs.Node) p9.QID {
	return p9.QID{Type: p9.ModeFromOS(fs.Attr(n).Mode).QIDType(), Path: n.Ino()}
}

// direntType returns the Linux DT_* type of a node.
func direntType(n vfs.Node) p9.QIDType {
	switch n.Kind() {
	case storeclient.KindDirectory:
		return dtDir
	case storeclient.KindSymlink:
		return dtLnk
	}
	return dtReg
}

// Walk implements p9.File. The library walks one name at a time (and clones
// with no names).
func (f *file) Walk(names []string) (_ []p9.QID, _ p9.File, err error) {
	defer f.sess.recoverPanic("Twalk", &err)
	qids, n, err := f.walk(names)
	if err != nil {
		return nil, nil, err
	}
	return qids, newFile(f.sess, n), nil
}

func (f *file) walk(names []string) ([]p9.QID, vfs.Node, error) {
	n := f.node
	qids := make([]p9.QID, 0, len(names))
	for _, name := range names {
		next, err := f.sess.fs.Lookup(f.sess.ctx, n, name)
		if err != nil {
			return nil, vfs.Node{}, p9Error(err)
		}
		n = next
		qids = append(qids, qid(f.sess.fs, n))
	}
	return qids, n, nil
}

// WalkGetAttr implements p9.File: a walk and the attributes of its result,
// which vfs has without a store call.
func (f *file) WalkGetAttr(names []string) (_ []p9.QID, _ p9.File, _ p9.AttrMask, _ p9.Attr, err error) {
	defer f.sess.recoverPanic("Twalk", &err)
	qids, n, err := f.walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	_, valid, attr := attrOf(f.sess.fs, n)
	return qids, newFile(f.sess, n), valid, attr, nil
}

// attrOf translates vfs attributes to Tgetattr's.
func attrOf(fs *vfs.FS, n vfs.Node) (p9.QID, p9.AttrMask, p9.Attr) {
	a := fs.Attr(n)
	sec, nsec := uint64(a.Mtime.Unix()), uint64(a.Mtime.Nanosecond())
	attr := p9.Attr{
		Mode:             p9.FileMode(a.UnixMode()),
		UID:              p9.UID(a.UID),
		GID:              p9.GID(a.GID),
		NLink:            p9.NLink(a.Nlink),
		Size:             a.Size,
		BlockSize:        uint64(fs.Statfs().BlockSize),
		Blocks:           a.Blocks,
		ATimeSeconds:     sec,
		ATimeNanoSeconds: nsec,
		MTimeSeconds:     sec,
		MTimeNanoSeconds: nsec,
		CTimeSeconds:     sec,
		CTimeNanoSeconds: nsec,
	}
	valid := p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true,
		ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true}
	return qid(fs, n), valid, attr
}

// GetAttr implements p9.File.
func (f *file) GetAttr(p9.AttrMask) (_ p9.QID, _ p9.AttrMask, _ p9.Attr, err error) {
	defer f.sess.recoverPanic("Tgetattr", &err)
	q, valid, attr := attrOf(f.sess.fs, f.node)
	return q, valid, attr, nil
}

// StatFS implements p9.File.
func (f *file) StatFS() (_ p9.FSStat, err error) {
	defer f.sess.recoverPanic("Tstatfs", &err)
	st := f.sess.fs.Statfs()
	return p9.FSStat{
		Type:       v9fsMagic,
		BlockSize:  st.BlockSize,
		Blocks:     st.Blocks,
		Files:      st.Files,
		NameLength: st.NameMax,
	}, nil
}

// openTrunc is P9_DOTL_TRUNC, O_TRUNC in Tlopen's flags.
const openTrunc = 0o1000

// Open implements p9.File. Opening for writing (or truncation) is EROFS;
// directories open for Treaddir; regular files open their blob. iounit is
// 0 so that Linux sizes reads by msize, not by us.
func (f *file) Open(mode p9.OpenFlags) (_ p9.QID, _ uint32, err error) {
	defer f.sess.recoverPanic("Tlopen", &err)
	if mode&p9.OpenFlagsModeMask != p9.ReadOnly || mode&openTrunc != 0 {
		return p9.QID{}, 0, p9Error(vfs.ReadOnly("open", ""))
	}
	if f.open.Load() != nil {
		return p9.QID{}, 0, errAlreadyOpen
	}
	o := &openFile{}
	if !f.node.IsDir() {
		h, err := f.sess.fs.Open(f.sess.ctx, f.node)
		if err != nil {
			return p9.QID{}, 0, p9Error(err)
		}
		o.h = h
	}
	if !f.open.CompareAndSwap(nil, o) { // a concurrent Tlopen won
		if o.h != nil {
			o.h.Close()
		}
		return p9.QID{}, 0, errAlreadyOpen
	}
	return qid(f.sess.fs, f.node), 0, nil
}

// ReadAt implements p9.File. The wire layer has already clamped the count
// to what fits in msize. A read of spliceMin bytes or more from a blob file
// is not done here: p is left for the wire layer to send from the file
// (sendfile.go), and ReadAt returns what vfs.File.ReadAt would have (the
// count, short with io.EOF at the end of the file).
func (f *file) ReadAt(p []byte, off int64) (_ int, err error) {
	defer f.sess.recoverPanic("Tread", &err)
	var h *vfs.File
	if o := f.open.Load(); o != nil {
		h = o.h
	}
	if h == nil {
		// The library only reads opened fids, so this is a directory: vfs
		// says what reading one is (EISDIR).
		_, err := f.sess.fs.Open(f.sess.ctx, f.node)
		if err == nil {
			err = vfs.ReadOnly("read", "") // unreachable: a file is always opened with its blob
		}
		return 0, p9Error(err)
	}
	res, err := h.Read(p, off)
	if err != nil {
		return 0, p9Error(err)
	}
	var eof error
	if res.Len < len(p) {
		eof = io.EOF
	}
	if res.File != nil && res.Len >= spliceMin && f.sess.spliced.enabled() {
		f.sess.spliced.put(p[:res.Len], res.File, res.Off-off, h.Size(), off)
		return res.Len, eof
	}
	b, err := res.Bytes(p)
	if err != nil {
		return 0, p9Error(err)
	}
	return copy(p, b), eof
}

// Readdir implements p9.File: entries after offset, as many as fit in count
// bytes. Offsets 0, 1 and 2 start before ".", before ".." and before the
// first entry; every other offset is a vfs cookie plus 2, so a listing
// resumes exactly after the last entry the client received, however the
// client sizes its reads.
func (f *file) Readdir(offset uint64, count uint32) (_ p9.Dirents, err error) {
	defer f.sess.recoverPanic("Treaddir", &err)
	var out p9.Dirents
	used := uint32(0)
	add := func(d p9.Dirent) bool {
		size := direntFixedSize + uint32(len(d.Name))
		if used+size > count {
			return false
		}
		used += size
		out = append(out, d)
		return true
	}
	self := qid(f.sess.fs, f.node)
	if offset == 0 && !add(p9.Dirent{QID: self, Offset: 1, Type: dtDir, Name: "."}) {
		return nil, errCountTooSmall
	}
	if offset <= 1 && !add(p9.Dirent{QID: self, Offset: 2, Type: dtDir, Name: ".."}) {
		return out, nil
	}
	cookie := uint64(0)
	if offset > dotEntries {
		cookie = offset - dotEntries
	}
	// Every entry takes at least direntFixedSize+1 bytes: ask vfs for no
	// more than can fit.
	max := int((count-used)/(direntFixedSize+1)) + 1
	es, err := f.sess.fs.ReadDir(f.sess.ctx, f.node, cookie, max)
	if err != nil {
		return nil, p9Error(err)
	}
	for _, e := range es {
		if e.Cookie > math.MaxUint64-dotEntries {
			f.sess.log.Error("ninep: directory cookie too large for a 9P offset", "cookie", e.Cookie, "name", e.Name)
			return nil, errCookieOverflow
		}
		d := p9.Dirent{QID: qid(f.sess.fs, e.Node), Offset: e.Cookie + dotEntries, Type: direntType(e.Node), Name: e.Name}
		if !add(d) {
			break
		}
	}
	if len(out) == 0 && len(es) > 0 {
		return nil, errCountTooSmall
	}
	return out, nil
}

// Readlink implements p9.File.
func (f *file) Readlink() (_ string, err error) {
	defer f.sess.recoverPanic("Treadlink", &err)
	s, err := f.sess.fs.Readlink(f.node)
	return s, p9Error(err)
}

// GetXattr implements p9.File (Txattrwalk with a name). The library answers
// every error here with EINVAL; the wire layer restores ENODATA (see
// wire.go).
func (f *file) GetXattr(name string) (_ []byte, err error) {
	defer f.sess.recoverPanic("Txattrwalk", &err)
	size, err := f.sess.fs.Getxattr(f.node, name, nil)
	if err != nil {
		return nil, p9Error(err)
	}
	b := make([]byte, size)
	if size > 0 {
		if size, err = f.sess.fs.Getxattr(f.node, name, b); err != nil {
			return nil, p9Error(err)
		}
	}
	f.sharedWithXattrFid()
	return b[:size], nil
}

// ListXattrs implements p9.File (Txattrwalk without a name).
func (f *file) ListXattrs() (_ []string, err error) {
	defer f.sess.recoverPanic("Txattrwalk", &err)
	names := f.sess.fs.Xattrs(f.node)
	f.sharedWithXattrFid()
	return names, nil
}

// sharedWithXattrFid records that the library will close f once more: a
// successful xattr walk makes a fid that shares f.
func (f *file) sharedWithXattrFid() { f.closes.Add(1) }

// Close implements p9.File: the last Close releases an open blob. The
// library calls it for Tclunk and Tremove, for a fid a walk replaces, and
// for every fid left when the connection ends (outside any handler: a
// panic here would end the process).
func (f *file) Close() (err error) {
	defer f.sess.recoverPanic("Tclunk", &err)
	if f.closes.Add(-1) != 0 {
		return nil
	}
	// The last Close: no request uses f any more.
	if o := f.open.Load(); o != nil && o.h != nil {
		return p9Error(o.h.Close())
	}
	return nil
}

// FSync implements p9.File: nothing to flush in a read-only filesystem.
func (f *file) FSync() error { return nil }

// Lock implements p9.File: advisory locks always succeed; nobody can write.
func (f *file) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusOK, nil
}

// Renamed implements p9.File; nothing is ever renamed.
func (f *file) Renamed(p9.File, string) {}

// The write-type methods. The wire layer refuses these requests before the
// library sees them; these answers are the same refusal, for requests that
// reach the library another way (p9's Tucreate family, for instance).

// SetAttr implements p9.File.
func (f *file) SetAttr(p9.SetAttrMask, p9.SetAttr) error { return refusal("setattr") }

// WriteAt implements p9.File.
func (f *file) WriteAt([]byte, int64) (int, error) { return 0, refusal("write") }

// SetXattr implements p9.File.
func (f *file) SetXattr(string, []byte, p9.XattrFlags) error { return refusal("setxattr") }

// RemoveXattr implements p9.File.
func (f *file) RemoveXattr(string) error { return refusal("removexattr") }

// Create implements p9.File.
func (f *file) Create(string, p9.OpenFlags, p9.FileMode, p9.UID, p9.GID) (p9.File, p9.QID, uint32, error) {
	return nil, p9.QID{}, 0, refusal("create")
}

// Mkdir implements p9.File.
func (f *file) Mkdir(string, p9.FileMode, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, refusal("mkdir")
}

// Symlink implements p9.File.
func (f *file) Symlink(string, string, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, refusal("symlink")
}

// Link implements p9.File.
func (f *file) Link(p9.File, string) error { return refusal("link") }

// Mknod implements p9.File.
func (f *file) Mknod(string, p9.FileMode, uint32, uint32, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, refusal("mknod")
}

// Rename implements p9.File.
func (f *file) Rename(p9.File, string) error { return refusal("rename") }

// RenameAt implements p9.File.
func (f *file) RenameAt(string, p9.File, string) error { return refusal("rename") }

// UnlinkAt implements p9.File.
func (f *file) UnlinkAt(string, uint32) error { return refusal("unlink") }

// attacher makes the root file of every Tattach on one connection. The
// library walks the aname from it, so an aname selects a subtree.
type attacher struct{ sess *session }

// Attach implements p9.Attacher.
func (a attacher) Attach() (_ p9.File, err error) {
	defer a.sess.recoverPanic("Tattach", &err)
	return newFile(a.sess, a.sess.fs.Root()), nil
}

package ninep

import (
	"encoding/binary"
	"fmt"
)

// 9P2000.L message types the server reads or writes.
const (
	tRlerror      = 7
	tTstatfs      = 8
	tTlopen       = 12
	tTreadlink    = 22
	tTgetattr     = 24
	tTxattrwalk   = 30
	tTreaddir     = 40
	tTfsync       = 50
	tTlock        = 52
	tTversion     = 100
	tTauth        = 102
	tTattach      = 104
	tTflush       = 108
	tTwalk        = 110
	tTread        = 116
	tTclunk       = 120
	tTremove      = 122
	tTwalkgetattr = 126 // p9's (gVisor's) Twalk that also answers Tgetattr: see doc.go
)

// msgNames names the 9P2000.L message types for log lines.
var msgNames = map[uint8]string{
	6: "Tlerror", 7: "Rlerror", 8: "Tstatfs", 9: "Rstatfs", 12: "Tlopen", 13: "Rlopen",
	14: "Tlcreate", 15: "Rlcreate", 16: "Tsymlink", 17: "Rsymlink", 18: "Tmknod", 19: "Rmknod",
	20: "Trename", 21: "Rrename", 22: "Treadlink", 23: "Rreadlink", 24: "Tgetattr", 25: "Rgetattr",
	26: "Tsetattr", 27: "Rsetattr", 30: "Txattrwalk", 31: "Rxattrwalk", 32: "Txattrcreate",
	33: "Rxattrcreate", 40: "Treaddir", 41: "Rreaddir", 50: "Tfsync", 51: "Rfsync", 52: "Tlock",
	53: "Rlock", 54: "Tgetlock", 55: "Rgetlock", 70: "Tlink", 71: "Rlink", 72: "Tmkdir", 73: "Rmkdir",
	74: "Trenameat", 75: "Rrenameat", 76: "Tunlinkat", 77: "Runlinkat", 100: "Tversion",
	101: "Rversion", 102: "Tauth", 103: "Rauth", 104: "Tattach", 105: "Rattach", 108: "Tflush",
	109: "Rflush", 110: "Twalk", 111: "Rwalk", 116: "Tread", 117: "Rread", 118: "Twrite",
	119: "Rwrite", 120: "Tclunk", 121: "Rclunk", 122: "Tremove", 123: "Rremove",
	126: "Twalkgetattr", 127: "Rwalkgetattr",
}

// msgName names message type typ.
func msgName(typ uint8) string {
	if n, ok := msgNames[typ]; ok {
		return n
	}
	return fmt.Sprintf("type %d", typ)
}

// served are the requests the server answers from the filesystem (besides
// Tversion, Tauth and the write requests).
var served = map[uint8]bool{
	tTstatfs: true, tTlopen: true, tTreadlink: true, tTgetattr: true, tTxattrwalk: true,
	tTreaddir: true, tTfsync: true, tTlock: true, tTattach: true, tTflush: true, tTwalk: true,
	tTread: true, tTclunk: true, tTremove: true, tTwalkgetattr: true,
}

// unservedErrno is the answer to a message the server does not serve: ENOSYS
// for a reply of a message it knows (a client sending replies), EIO for
// anything else (unknown types, Tgetlock, Tlerror), as diod and the p9
// library answer them.
func unservedErrno(typ uint8) errno {
	if typ == tRlerror {
		return errNotARequest
	}
	req := typ &^ 1
	_, write := writeRequests[req]
	write = write && req != 114 // Tcreate is 9P2000's
	if typ&1 == 1 && (write || req == tTauth || req == tTversion || served[req]) {
		return errNotARequest
	}
	return errUnknownType
}

// writeRequests are the requests that would change the filesystem, with the
// vfs operation each stands for: all answered with vfs's refusal (EROFS),
// their bodies skipped unread.
var writeRequests = map[uint8]string{
	14:  "create",   // Tlcreate
	16:  "symlink",  // Tsymlink
	18:  "mknod",    // Tmknod
	20:  "rename",   // Trename
	26:  "setattr",  // Tsetattr
	32:  "setxattr", // Txattrcreate
	70:  "link",     // Tlink
	72:  "mkdir",    // Tmkdir
	74:  "rename",   // Trenameat
	76:  "unlink",   // Tunlinkat
	118: "write",    // Twrite
	128: "create",   // Tucreate (p9's 9P2000.L.Google extension)
	130: "mkdir",    // Tumkdir
	132: "mknod",    // Tumknod
	134: "symlink",  // Tusymlink
	114: "create",   // Tcreate (9P2000)
}

const (
	headerSize   = 7      // size[4] type[1] tag[2]
	ioHeaderSize = 11     // Rread/Rreaddir: header and count[4]
	qidSize      = 13     // type[1] version[4] path[8]
	noTag        = 0xFFFF // the tag of Tversion
	noFid        = ^uint32(0)
	maxWalkNames = 16      // MAXWELEM
	maxPath      = 4096    // PATH_MAX: the longest uname or aname of a Tattach
	preVersion   = 512     // the largest message accepted before Tversion
	keptFrame    = 8 << 10 // the reader's buffer: requests up to this size
	version      = "9P2000.L"
)

// decoder reads the fields of a request body. A field past the end sets bad
// and reads as zero; strings are bounded by the body, which is bounded by
// msize, so nothing is allocated from a count before it is checked.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) u8() uint8 {
	if len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u16() uint16 {
	if len(d.b) < 2 {
		d.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	lo, hi := d.u32(), d.u32()
	return uint64(hi)<<32 | uint64(lo)
}

// bytes reads a string without copying it.
func (d *decoder) bytes() []byte {
	n := int(d.u16())
	if len(d.b) < n {
		d.bad = true
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// qid is a 9P qid: type, version, path.
type qid struct {
	typ     uint8
	version uint32
	path    uint64
}

// encoder builds one reply: newReply reserves its header, done fills it in.
type encoder struct{ b []byte }

func newReply(typ uint8, tag uint16, size int) *encoder {
	e := &encoder{b: make([]byte, headerSize, headerSize+size)}
	e.b[4] = typ
	binary.LittleEndian.PutUint16(e.b[5:], tag)
	return e
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) { e.u16(uint16(len(s))); e.b = append(e.b, s...) }
func (e *encoder) qid(q qid)    { e.u8(q.typ); e.u32(q.version); e.u64(q.path) }

// done sets the size field for a message of payload more bytes after e.b
// and returns e.b.
func (e *encoder) done(payload int) []byte {
	binary.LittleEndian.PutUint32(e.b, uint32(len(e.b)+payload))
	return e.b
}

// rlerror returns the Rlerror message answering tag with errno.
func rlerror(tag uint16, en errno) []byte {
	e := newReply(tRlerror, tag, 4)
	e.u32(uint32(en))
	return e.done(0)
}

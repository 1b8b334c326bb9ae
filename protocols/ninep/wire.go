package ninep

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/linux"

	"github.com/storefs/storefs/internal/clientstr"
	"github.com/storefs/storefs/internal/netguard"

	"github.com/storefs/storefs/vfs"
)

// 9P2000.L message types the wire layer looks at.
const (
	tRlerror    = 7
	tRread      = 117
	tTxattrwalk = 30
	tRxattrwalk = 31
	tTreaddir   = 40
	tTversion   = 100
	tRversion   = 101
	tTauth      = 102
	tTattach    = 104
	tTwalk      = 110
	tTread      = 116
	tTclunk     = 120
	tTremove    = 122
	// tTwalkgetattr is p9's Twalk that also answers Tgetattr of the
	// result. p9 v0.4.1 accepts it under plain 9P2000.L (Linux never
	// sends it) and makes or replaces newfid as for Twalk, so the wire
	// layer treats it as Twalk: same body (fid, newfid, names), same
	// limits, and its reply (127) is its type + 1.
	tTwalkgetattr = 126
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

// libraryServes are the requests the wire layer passes to the library
// (besides Tversion, which it handles with the library). Write requests and
// Tauth it answers itself, and every other type as the library would.
var libraryServes = map[uint8]bool{
	8: true, 12: true, 22: true, 24: true, 30: true, 40: true, 50: true, 52: true, // Tstatfs Tlopen Treadlink Tgetattr Txattrwalk Treaddir Tfsync Tlock
	tTattach: true, 108: true, tTwalk: true, tTread: true, tTclunk: true, tTremove: true, tTwalkgetattr: true, // … Tflush …
}

// libraryDecodes reports whether p9 v0.4.1 has a decoder for message type
// typ: every request it knows, and each one's reply (type + 1), and
// Rlerror.
func libraryDecodes(typ uint8) bool {
	if typ == tRlerror {
		return true
	}
	req := typ &^ 1
	_, write := writeRequests[req]
	write = write && req != 114 // Tcreate is 9P2000's
	return write || req == tTauth || req == tTversion || libraryServes[req]
}

// writeRequests are the requests that would change the filesystem, with the
// vfs operation each stands for. The wire layer answers them itself with
// vfs's refusal, so the library never sees them: p9 would otherwise accept
// Txattrcreate, fail some writes with EINVAL or EPERM before asking the
// File, and refuse Twrite to a read-only fid with EPERM.
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
	noTag        = 0xFFFF // the tag of Tversion
	noFid        = ^uint32(0)
	maxWalkNames = 16      // MAXWELEM
	maxPath      = 4096    // PATH_MAX: the longest uname or aname of a Tattach
	preVersion   = 512     // the largest message accepted before Tversion
	smallFrame   = 4 << 10 // replies up to this size are copied whole
	keptFrame    = 8 << 10 // the reader's buffer: requests up to this size
	version      = "9P2000.L"
)

// errProtocol is the cause of a connection closed for a protocol violation.
var errProtocol = errors.New("9P protocol violation")

// request is what the wire layer remembers of a request the library is
// handling, to keep its fid count and to correct the library's reply.
type request struct {
	typ    uint8
	fid    uint32  // Tclunk, Tremove: the fid released; Tread: the fid read; walks: the source
	newFid uint32  // Tattach, Twalk, Twalkgetattr, Txattrwalk: the fid made on success
	names  int     // Twalk, Twalkgetattr: how many names
	charge int     // library references newFid would hold, reserved until the reply
	ref    *libRef // Tread: the fid's reference when the request was read
	parent *libRef // walks: the source fid's reference, held until the reply
	named  bool    // Txattrwalk: a getxattr (true) or a listxattr (false)
	read   bool    // holds a read slot
}

// wireConn is the connection as the p9 library sees it. It frames the 9P
// stream and enforces and corrects what the library does not:
//
//   - Tversion: only plain "9P2000.L" is accepted (anything else gets
//     Rversion "unknown" and may try again); msize is clamped to
//     Options.MaxMsize (the library would grant 4 MiB); a second Tversion,
//     a request before Tversion, a message larger than msize or a
//     duplicate tag closes the connection.
//   - Tread and Treaddir counts are clamped to msize minus the reply header
//     (the library would overrun its msize-sized buffer and answer EFAULT).
//   - Write-type requests are answered with vfs's refusal (EROFS).
//   - Tauth is answered with ENOENT, which diod's client tools take for
//     "no authentication required" (p9 answers ENOSYS, which they take
//     for a failure).
//   - Fids: a request that would make the connection hold more than
//     Options.MaxFids of the library's fid references (or the server more
//     than Options.MaxServerFids) gets EMFILE; a Twalk of more than 16
//     names EINVAL. The library makes or replaces fids on Tattach, Twalk,
//     p9's Twalkgetattr and Txattrwalk (the others that do, Tlcreate and
//     Tucreate, are write requests, refused with EROFS): the wire layer
//     mirrors its references (fids.go), and a fid it replaces gets a new
//     reference and leaves the direct fids.
//   - In-flight requests are bounded by Options.MaxRequests (the library
//     starts a goroutine per request), and Treads and Treaddirs by
//     Options.MaxReadBytes (each holds an msize buffer): the connection is
//     not read further until a reply goes out. Nothing follows a Tversion
//     until its reply (the library sets the session up meanwhile).
//   - Replies: p9 v0.4.1 answers every failed Txattrwalk with EINVAL and an
//     empty xattr list as one empty name; the reply is corrected to
//     ENODATA (the only error vfs.Getxattr gives for an unknown name: its
//     lookups never touch the store) and to size 0. Tremove of a root fid
//     gets EROFS instead of the library's EINVAL. A reply to a message the
//     library could not decode goes out with NOTAG, which the client
//     cannot match: the connection is closed after it.
//
// Reads come only from the library's receiving goroutine (it serializes
// them) and writes only under its send lock, one reply at a time; each
// reply reaches the socket as one writev, or, for an Rread from a blob
// file, as the header and one sendfile (sendfile.go), under sendMu.
type wireConn struct {
	conn                     net.Conn
	fs                       *vfs.FS         // for its Observer, told about sendfile reads
	raw                      syscall.RawConn // conn's socket, for sendfile; nil without
	spliced                  *splicedReads   // Rread payloads to sendfile; nil: always copy
	spliceCount              *atomic.Int64   // the server's count of Rreads sent with sendfile
	br                       *bufio.Reader
	log                      *slog.Logger
	panics                   panicLog
	maxMsize                 uint32
	maxFids                  int
	maxReadBytes             int
	readSlots                chan struct{} // one per Tread or Treaddir the library is handling; made at Tversion
	writeTimeout, msgTimeout time.Duration
	sendFailed               atomic.Bool   // a reply could not be sent: the connection is closing
	slots                    chan struct{} // one per request the library is handling
	done                     chan struct{} // closed by Close
	closeOnce                sync.Once
	closeErr                 error
	sendMu                   sync.Mutex // whole replies: the library's and our own
	rbuf, rcur               []byte     // reader: the current request and its unread part
	rtyp                     uint8      // reader: the current request's type
	msize                    uint32     // reader: 0 before Tversion
	wbuf                     []byte     // writer: the reply being assembled
	wsize                    int        // writer: its size, 0 before its header arrived
	mu                       sync.Mutex // the fields below, shared by reader and writer
	inflight                 map[uint16]request
	fids                     map[uint32]*libRef    // fid → its library reference, new whenever the fid is (re)made
	fidUse                   map[uint32]fidUse     // fids used by requests in flight
	direct                   map[uint32]directFile // fids whose Treads the wire layer answers
	refs, pendingRefs        int                   // library references held, and reserved by requests in flight
	budget                   *fidBudget            // the server's, shared by its connections
	finished                 chan struct{}         // closed by the next finish, for a request waiting on fidUse
	fidLimitLogged           bool                  // a fid limit was logged for this connection
	versioning               bool                  // Tversion is in flight: nothing else is passed on
}

func newWireConn(conn net.Conn, fs *vfs.FS, log *slog.Logger, opts Options, spliceCount *atomic.Int64, budget *fidBudget) *wireConn {
	c := &wireConn{
		conn:         conn,
		fs:           fs,
		spliceCount:  spliceCount,
		br:           bufio.NewReaderSize(conn, 64<<10),
		log:          log,
		panics:       panicLog{logger: log},
		maxMsize:     opts.MaxMsize,
		maxFids:      opts.MaxFids,
		maxReadBytes: opts.MaxReadBytes,
		budget:       budget,
		writeTimeout: opts.WriteTimeout,
		msgTimeout:   opts.MessageTimeout,
		slots:        make(chan struct{}, opts.MaxRequests),
		done:         make(chan struct{}),
		inflight:     make(map[uint16]request),
		fids:         make(map[uint32]*libRef),
		fidUse:       make(map[uint32]fidUse),
		direct:       make(map[uint32]directFile),
	}
	if !opts.NoSendfile {
		c.initSendfile()
	}
	return c
}

// Close closes the connection; it may be called more than once.
func (c *wireConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.closeErr = c.conn.Close()
	})
	return c.closeErr
}

// Read hands the library the next request it should handle, byte by byte
// as it asks.
func (c *wireConn) Read(p []byte) (_ int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = c.panicked(v, msgName(c.rtyp))
		}
	}()
	for len(c.rcur) == 0 {
		if err := c.nextRequest(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rcur)
	c.rcur = c.rcur[n:]
	return n, nil
}

// errPanic is the cause of a connection closed after a panic in the wire
// layer.
var errPanic = errors.New("panic in the 9P wire layer")

// panicked handles a panic recovered in Read or Write (the library's calls
// into the wire layer, which p9 does not guard) while handling a message
// of type typ: it logs it at Error, closes the connection and returns the
// error for the library. The connection cannot go on: the panic may have
// left half a reply on the socket or the wire layer's fid and request
// tables half updated, and an Rlerror sent now could land in the middle of
// another reply.
func (c *wireConn) panicked(v any, typ string) error {
	c.panics.log("ninep: panic in the wire layer; closing the connection", typ, v)
	c.Close()
	return fmt.Errorf("%w: %s", errPanic, clientstr.Quote(fmt.Sprint(v)))
}

// violation logs a protocol violation and returns the error that ends the
// connection.
func (c *wireConn) violation(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.log.Warn("ninep: closing connection: " + msg)
	return fmt.Errorf("%w: %s", errProtocol, msg)
}

// nextRequest reads requests until one is for the library, answering the
// others itself.
func (c *wireConn) nextRequest() error {
	for {
		// Wait as long as it takes for a message to start (an idle
		// mount is fine), then for the rest of it no longer than
		// MessageTimeout: a connection stalled in the middle of a
		// message is broken or hostile. The deadline is set only when
		// the message is not already buffered, and cleared after.
		if _, err := c.br.Peek(1); err != nil {
			return err
		}
		c.rtyp = 0
		timed := false
		if c.br.Buffered() < headerSize {
			c.setReadDeadline()
			timed = true
		}
		var hdr [headerSize]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return c.readFailed(err, headerSize)
		}
		size := binary.LittleEndian.Uint32(hdr[:])
		typ, tag := hdr[4], binary.LittleEndian.Uint16(hdr[5:])
		c.rtyp = typ
		limit := c.msize
		if limit == 0 {
			limit = preVersion
		}
		if size < headerSize || size > limit {
			return c.violation("message of %d bytes (type %d), limit %d", size, typ, limit)
		}
		if _, ok := writeRequests[typ]; ok && c.msize != 0 {
			// Refused whatever it holds: its body (a Twrite's data,
			// up to msize) is skipped, not buffered.
			if _, err := c.br.Discard(int(size) - headerSize); err != nil {
				return c.readFailed(err, int(size))
			}
			if err := c.clearReadDeadline(timed); err != nil {
				return err
			}
			netguard.Active(c.conn)
			if err := c.replyError(tag, refusal(writeRequests[typ])); err != nil {
				return err
			}
			continue
		}
		var frame []byte
		if size <= keptFrame {
			if c.rbuf == nil {
				c.rbuf = make([]byte, keptFrame)
			}
			frame = c.rbuf[:size]
		} else {
			// Only a hostile client sends large requests (a Twalk of
			// 16 long names): not kept for the next message.
			frame = make([]byte, size)
		}
		copy(frame, hdr[:])
		if !timed && c.br.Buffered() < int(size)-headerSize {
			c.setReadDeadline()
			timed = true
		}
		if _, err := io.ReadFull(c.br, frame[headerSize:]); err != nil {
			return c.readFailed(err, int(size))
		}
		if err := c.clearReadDeadline(timed); err != nil {
			return err
		}
		netguard.Active(c.conn)
		pass, err := c.inspect(typ, tag, frame)
		if err != nil {
			return err
		}
		if pass {
			c.rcur = frame
			return nil
		}
	}
}

// setReadDeadline bounds the time the rest of a message may take to
// arrive.
func (c *wireConn) setReadDeadline() {
	if c.msgTimeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.msgTimeout))
	}
}

// clearReadDeadline clears the deadline setReadDeadline set, if timed.
func (c *wireConn) clearReadDeadline(timed bool) error {
	if !timed || c.msgTimeout <= 0 {
		return nil
	}
	return c.conn.SetReadDeadline(time.Time{})
}

// readFailed returns the error that ends the connection when a message
// of size bytes could not be read whole, logging a stalled one.
func (c *wireConn) readFailed(err error, size int) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.log.Info("ninep: closing connection: a message stopped arriving midway",
			"type", msgName(c.rtyp), "size", size, "timeout", c.msgTimeout)
	}
	return fmt.Errorf("truncated %d-byte message: %w", size, err)
}

// body reads the fixed fields of a request.
type body struct {
	b   []byte
	bad bool
}

func (b *body) u16() uint16 {
	if len(b.b) < 2 {
		b.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint16(b.b)
	b.b = b.b[2:]
	return v
}

func (b *body) u32() uint32 {
	if len(b.b) < 4 {
		b.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(b.b)
	b.b = b.b[4:]
	return v
}

func (b *body) u64() uint64 {
	lo, hi := b.u32(), b.u32()
	return uint64(hi)<<32 | uint64(lo)
}

// bytes reads a string without copying it.
func (b *body) bytes() []byte {
	n := int(b.u16())
	if len(b.b) < n {
		b.bad = true
		return nil
	}
	s := b.b[:n:n]
	b.b = b.b[n:]
	return s
}

// inspect decides what happens to one request: passed to the library
// (possibly rewritten), answered here, or the end of the connection.
func (c *wireConn) inspect(typ uint8, tag uint16, frame []byte) (bool, error) {
	b := &body{b: frame[headerSize:]}
	if typ == tTversion {
		return c.version(tag, frame, b)
	}
	if c.msize == 0 {
		return false, c.violation("request type %d before Tversion", typ)
	}
	if op, ok := writeRequests[typ]; ok {
		return false, c.replyError(tag, refusal(op))
	}
	if typ == tTauth {
		return false, c.replyError(tag, errNoAuth)
	}
	if !libraryServes[typ] {
		// Answered as the library would, without letting it decode
		// the body: its decoders size arrays from counts in the message
		// (an Rwalk of 65 535 qids is 1 MiB from 9 bytes).
		errno := linux.EIO // p9: "invalid message type"
		if libraryDecodes(typ) {
			errno = linux.ENOSYS // p9: a message it decodes but does not serve (a reply)
		}
		return false, c.replyError(tag, errno)
	}
	req := request{typ: typ, newFid: noFid}
	switch typ {
	case tTattach:
		req.newFid = b.u32()
		b.u32() // afid
		uname, aname := b.bytes(), b.bytes()
		b.u32() // n_uname
		if !b.bad && (len(uname) > maxPath || len(aname) > maxPath) {
			return false, c.replyError(tag, errNameTooLong)
		}
		req.charge = newRefs(typ, 0, aname)
	case tTwalk, tTwalkgetattr:
		req.fid = b.u32()
		req.newFid = b.u32()
		req.names = int(b.u16())
		if req.names > maxWalkNames && !b.bad {
			return false, c.replyError(tag, errTooManyNames)
		}
		req.charge = newRefs(typ, req.names, nil)
	case tTxattrwalk:
		req.fid = b.u32()
		req.newFid = b.u32()
		req.charge = 1
		req.named = len(b.bytes()) > 0
	case tTclunk, tTremove:
		req.fid = b.u32()
	case tTread, tTreaddir:
		req.fid = b.u32()
		off := b.u64()
		count := b.u32()
		if !b.bad && count > c.msize-ioHeaderSize {
			count = c.msize - ioHeaderSize
			binary.LittleEndian.PutUint32(frame[headerSize+12:], count)
		}
		if typ == tTread && !b.bad {
			if done, err := c.readDirect(tag, req.fid, off, count); done {
				return false, err
			}
		}
	}
	if b.bad {
		return false, c.violation("truncated request type %d", typ)
	}
	return c.start(tag, req)
}

// version handles Tversion.
func (c *wireConn) version(tag uint16, frame []byte, b *body) (bool, error) {
	msize, vb := b.u32(), b.bytes()
	if b.bad {
		return false, c.violation("truncated Tversion")
	}
	if c.msize != 0 {
		return false, c.violation("Tversion after the session started")
	}
	if string(vb) != version || msize < MinMsize {
		c.log.Info("ninep: refused version", "version", clientstr.TrimBytes(vb), "msize", msize)
		return false, c.replyVersion(tag, min(msize, c.maxMsize), "unknown")
	}
	msize = min(msize, c.maxMsize)
	binary.LittleEndian.PutUint32(frame[headerSize:], msize)
	c.msize = msize
	c.readSlots = make(chan struct{}, max(1, c.maxReadBytes/int(msize)))
	return c.start(tag, request{typ: tTversion, newFid: noFid})
}

// start records a request for the library, waiting while it must (see
// fids.go) or the connection has MaxRequests in flight (or MaxReadBytes
// of reads). It reports false if it answered the request itself (the fid
// limits).
func (c *wireConn) start(tag uint16, req request) (bool, error) {
	if ok, err := c.admit(tag, &req); !ok {
		return false, err
	}
	select {
	case c.slots <- struct{}{}:
	case <-c.done:
		return false, net.ErrClosed
	}
	if req.read {
		select {
		case c.readSlots <- struct{}{}:
		case <-c.done:
			return false, net.ErrClosed
		}
	}
	return true, nil
}

// admit checks and records req under c.mu, waiting while requests in
// flight use its fids.
func (c *wireConn) admit(tag uint16, req *request) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.inflight[tag]; dup {
		return false, c.violation("tag %d reused while in flight", tag)
	}
	for c.conflictLocked(req) {
		if c.finished == nil {
			c.finished = make(chan struct{})
		}
		ch := c.finished
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.done:
		}
		c.mu.Lock()
		select {
		case <-c.done:
			return false, net.ErrClosed
		default:
		}
	}
	if req.newFid != noFid {
		credit := 0
		if !walksFrom(req.typ) || req.newFid != req.fid {
			credit = freeableLocked(c.fids[req.newFid])
		}
		held := c.refs + c.pendingRefs + req.charge - credit
		if held > c.maxFids {
			if !c.fidLimitLogged { // once: a client may ask again and again
				c.fidLimitLogged = true
				c.log.Warn("ninep: fid limit of the connection reached; answering EMFILE", "max_fids", c.maxFids)
			}
			return false, c.replyError(tag, errTooManyFids)
		}
		if held <= fidFloor {
			c.budget.n.Add(int64(req.charge))
		} else if !c.budget.reserve(req.charge, credit) {
			if !c.fidLimitLogged {
				c.fidLimitLogged = true
				c.log.Warn("ninep: fid limit of the server reached; answering EMFILE", "max_server_fids", c.budget.max)
			}
			return false, c.replyError(tag, errTooManyFids)
		}
		c.pendingRefs += req.charge
	}
	if walksFrom(req.typ) {
		if p := c.fids[req.fid]; p != nil {
			p.refs++ // as the library's lookup holds the source
			req.parent = p
		}
	}
	if req.typ == tTread {
		req.ref = c.fids[req.fid]
	}
	req.read = req.typ == tTread || req.typ == tTreaddir
	c.versioning = req.typ == tTversion
	c.useLocked(req, 1)
	c.inflight[tag] = *req
	return true, nil
}

// finish forgets the request a reply answers and mirrors what it did to
// the library's fids.
func (c *wireConn) finish(typ uint8, tag uint16) (request, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req, ok := c.inflight[tag]
	if !ok {
		return request{}, false
	}
	delete(c.inflight, tag)
	<-c.slots
	if req.read {
		<-c.readSlots
	}
	c.useLocked(&req, -1)
	if req.typ == tTversion {
		c.versioning = false
	}
	if c.finished != nil {
		close(c.finished)
		c.finished = nil
	}
	if req.newFid != noFid {
		c.pendingRefs -= req.charge
		c.budget.n.Add(-int64(req.charge))
		if typ == req.typ+1 { // success: the R type is the T type + 1
			// A new fid, or one a Twalk moved (newfid = fid): a new
			// reference, and its reads go through the library until
			// it reads again.
			c.madeLocked(&req)
			delete(c.direct, req.newFid)
		} else {
			c.dropLocked(req.parent)
		}
	}
	if req.typ == tTclunk || req.typ == tTremove {
		// The library drops the fid whatever the outcome.
		if r, ok := c.fids[req.fid]; ok {
			delete(c.fids, req.fid)
			c.dropLocked(r)
		}
		delete(c.direct, req.fid)
	}
	return req, true
}

// Write takes the library's reply in the pieces it writes (header, fixed
// part, payload) and sends each whole reply with one writev.
func (c *wireConn) Write(p []byte) (_ int, err error) {
	defer func() {
		if v := recover(); v != nil {
			typ := uint8(0)
			if cap(c.wbuf) > 4 { // the reply being assembled or just sent
				typ = c.wbuf[:5][4]
			}
			err = c.panicked(v, msgName(typ))
		}
	}()
	n := len(p)
	for len(p) > 0 {
		if c.wsize == 0 {
			take := min(headerSize-len(c.wbuf), len(p))
			c.wbuf = append(c.wbuf, p[:take]...)
			p = p[take:]
			if len(c.wbuf) < headerSize {
				continue
			}
			c.wsize = int(binary.LittleEndian.Uint32(c.wbuf))
			if c.wsize < headerSize {
				return 0, fmt.Errorf("ninep: reply of %d bytes", c.wsize)
			}
			if c.wsize == headerSize {
				if err := c.sendReply(nil); err != nil {
					return 0, err
				}
			}
			continue
		}
		need := c.wsize - len(c.wbuf)
		take := min(need, len(p))
		if take < need || c.wsize <= smallFrame {
			c.wbuf = append(c.wbuf, p[:take]...)
			p = p[take:]
			if take < need {
				continue
			}
			if err := c.sendReply(nil); err != nil {
				return 0, err
			}
			continue
		}
		// The last piece of a large reply (read data) goes out uncopied.
		if err := c.sendReply(p[:take]); err != nil {
			return 0, err
		}
		p = p[take:]
	}
	return n, nil
}

// sendReply corrects and sends the assembled reply (c.wbuf, then tail).
func (c *wireConn) sendReply(tail []byte) error {
	frame := c.wbuf
	c.wbuf, c.wsize = c.wbuf[:0], 0
	typ, tag := frame[4], binary.LittleEndian.Uint16(frame[5:])
	req, ok := c.finish(typ, tag)
	malformed := typ == tRlerror && tag == noTag && !ok
	if ok && tail == nil {
		c.correct(req, typ, frame)
	}
	var err error
	var sr splicedRead
	spliced := false
	if typ == tRread && c.spliced != nil {
		sr, spliced, err = c.spliced.take(tail)
		if err != nil {
			// The payload buffer was never filled: nothing may be sent.
			c.log.Error("ninep: closing connection", "err", err)
			c.Close()
			return err
		}
	}
	if spliced {
		if req.typ == tTread {
			c.learn(req, sr)
		}
		err = c.sendSpliced(frame, tail, sr)
	} else {
		c.lockSend()
		bufs := net.Buffers{frame}
		if tail != nil {
			bufs = append(bufs, tail)
		}
		_, err = bufs.WriteTo(c.conn)
		c.sendMu.Unlock()
	}
	if err != nil {
		c.failSend(err)
	}
	if malformed {
		c.violation("a message the server could not decode")
		c.Close()
	}
	return err
}

// correct fixes the library's reply to req in place (see wireConn).
func (c *wireConn) correct(req request, typ uint8, frame []byte) {
	switch {
	case typ == tRlerror && len(frame) >= headerSize+4:
		errno := linux.Errno(binary.LittleEndian.Uint32(frame[headerSize:]))
		var fixed linux.Errno
		switch {
		case errno == linux.EFAULT:
			// p9 answers EFAULT for a handler that panicked (and
			// logged it); nothing else in the library or in vfs
			// gives EFAULT. The request failed: EIO, as for a panic
			// in this package's code (session.recoverPanic).
			fixed = linux.EIO
		case req.typ == tTxattrwalk && req.named && errno == linux.EINVAL:
			fixed = errNoData
		case req.typ == tTremove && errno != linux.EBADF:
			fixed = refusal("remove")
		}
		if fixed != 0 {
			binary.LittleEndian.PutUint32(frame[headerSize:], uint32(fixed))
		}
	case typ == tRxattrwalk && req.typ == tTxattrwalk && !req.named && len(frame) >= headerSize+8:
		if binary.LittleEndian.Uint64(frame[headerSize:]) == 1 {
			binary.LittleEndian.PutUint64(frame[headerSize:], 0) // "\x00": no names
		}
	}
}

// replyError answers a request with Rlerror, without the library.
func (c *wireConn) replyError(tag uint16, errno linux.Errno) error {
	return c.send(rlerror(tag, errno))
}

// rlerror returns the Rlerror message answering tag with errno.
func rlerror(tag uint16, errno linux.Errno) []byte {
	f := binary.LittleEndian.AppendUint32(nil, headerSize+4)
	f = append(f, tRlerror)
	f = binary.LittleEndian.AppendUint16(f, tag)
	return binary.LittleEndian.AppendUint32(f, uint32(errno))
}

// replyVersion answers Tversion without the library.
func (c *wireConn) replyVersion(tag uint16, msize uint32, v string) error {
	f := binary.LittleEndian.AppendUint32(nil, uint32(headerSize+4+2+len(v)))
	f = append(f, tRversion)
	f = binary.LittleEndian.AppendUint16(f, tag)
	f = binary.LittleEndian.AppendUint32(f, msize)
	f = binary.LittleEndian.AppendUint16(f, uint16(len(v)))
	f = append(f, v...)
	return c.send(f)
}

func (c *wireConn) send(frame []byte) error {
	c.lockSend()
	_, err := c.conn.Write(frame)
	c.sendMu.Unlock()
	if err != nil {
		c.failSend(err)
	}
	return err
}

// lockSend takes sendMu for one reply and gives its writes WriteTimeout.
func (c *wireConn) lockSend() {
	c.sendMu.Lock()
	if c.writeTimeout > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
}

// failSend closes the connection after a reply could not be sent whole
// (the client did not take it within WriteTimeout, went away, or a blob
// file failed mid-reply): the stream may hold part of it. It logs once.
func (c *wireConn) failSend(err error) {
	if c.sendFailed.Swap(true) {
		return
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Info("ninep: closing connection: the client took no reply for too long", "timeout", c.writeTimeout)
	case errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		c.log.Debug("ninep: connection closed while sending a reply", "err", err)
	default:
		c.log.Warn("ninep: closing connection: sending a reply failed", "err", err)
	}
	c.Close()
}

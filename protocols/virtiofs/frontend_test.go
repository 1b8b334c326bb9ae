//go:build linux

package virtiofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// This file is a fake vhost-user front-end and virtio driver: what QEMU
// and the guest kernel do, reduced to what the tests need. Guest memory
// is a memfd shared with the back-end through SCM_RIGHTS; the driver
// writes rings and buffers into it directly.

const (
	testMemSize    = 8 << 20
	testGuestBase  = 0x10_0000      // guest physical address of the region
	testUserBase   = 0x7f00_0000_00 // the "VMM's" virtual address of it
	testMmapOffset = 4096           // the region starts one page into the fd
	testQueueSize  = 16
)

// guest is the fake guest's memory: an mmapped memfd and a bump allocator.
type guest struct {
	fd   int
	mem  []byte // the whole file
	mu   sync.Mutex
	next uint64 // next free offset (from the region start)
}

func newGuest(t *testing.T) *guest {
	t.Helper()
	fd, err := unix.MemfdCreate("guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, testMemSize+testMmapOffset); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, testMemSize+testMmapOffset, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem); unix.Close(fd) })
	return &guest{fd: fd, mem: mem, next: 0}
}

// region returns the region's bytes (offset 0 = guest address testGuestBase).
func (g *guest) region() []byte { return g.mem[testMmapOffset:] }

// alloc reserves n bytes aligned to align and returns their region offset.
func (g *guest) alloc(n, align uint64) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next = (g.next + align - 1) &^ (align - 1)
	off := g.next
	g.next += n
	if g.next > testMemSize {
		panic("fake guest out of memory")
	}
	return off
}

func gpa(off uint64) uint64   { return testGuestBase + off }
func uaddr(off uint64) uint64 { return testUserBase + off }

// testFence is a full memory barrier for the fake driver (a locked
// read-modify-write).
var testFence atomic.Uint32

// vq is the driver's view of one split virtqueue in guest memory.
type vq struct {
	g                  *guest
	index              int
	size               uint16
	desc, avail, used  uint64 // region offsets
	availIdx, lastUsed uint16
	nextDesc           uint16
	kick, call         int // eventfds (driver side)
}

func newVQ(g *guest, index int, size uint16) *vq {
	q := &vq{g: g, index: index, size: size}
	n := uint64(size)
	q.desc = g.alloc(16*n, 16)
	q.avail = g.alloc(6+2*n, 2)
	q.used = g.alloc(6+8*n, 4)
	return q
}

func (q *vq) r() []byte { return q.g.region() }

// putDesc writes descriptor i of the ring's table (or of table at off).
func (q *vq) putDescAt(tableOff uint64, i uint16, addr uint64, length uint32, flags, next uint16) {
	d := q.r()[tableOff+16*uint64(i):]
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], length)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

func (q *vq) putDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	q.putDescAt(q.desc, i, addr, length, flags, next)
}

// publish makes head available and asks to be told about every used
// entry (used_event = what we have seen).
func (q *vq) publish(head uint16) {
	r := q.r()
	binary.LittleEndian.PutUint16(r[q.avail+4+2*uint64(q.availIdx%q.size):], head)
	binary.LittleEndian.PutUint16(r[q.avail+4+2*uint64(q.size):], q.lastUsed)
	q.availIdx++
	// The back-end reads the index with a fence after it; a plain store
	// is ordered after the ones above on the platforms this runs on, and
	// the kick's write syscall is a full barrier anyway.
	binary.LittleEndian.PutUint16(r[q.avail+2:], q.availIdx)
}

func (q *vq) kickIt(t *testing.T) {
	t.Helper()
	if _, err := unix.Write(q.kick, binary.LittleEndian.AppendUint64(nil, 1)); err != nil {
		t.Fatal(err)
	}
}

func (q *vq) usedIdx() uint16 {
	return binary.LittleEndian.Uint16(q.r()[q.used+2:])
}

// callWait bounds how long waitUsed waits for one call notification.
const callWait = 20 * time.Second

// waitUsed blocks until the device has used want more chains than seen,
// and returns their (id, len) pairs. The call eventfd is signalled for
// each (we ask for every one), so no wakeup is lost.
func (q *vq) waitUsed(t *testing.T, want int) [][2]uint32 {
	t.Helper()
	var out [][2]uint32
	var buf [8]byte
	for len(out) < want {
		for q.lastUsed != q.usedIdx() && len(out) < want {
			e := q.r()[q.used+4+8*uint64(q.lastUsed%q.size):]
			out = append(out, [2]uint32{binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])})
			q.lastUsed++
		}
		if len(out) < want {
			// Ask for a call at the next used entry, as Linux's
			// virtqueue_enable_cb does, then look once more to
			// close the race with a push that did not see it.
			binary.LittleEndian.PutUint16(q.r()[q.avail+4+2*uint64(q.size):], q.lastUsed)
			testFence.Add(1)
			if q.lastUsed != q.usedIdx() {
				continue
			}
			// The back-end made the shared eventfd non-blocking. A
			// lost notification must fail the test, not hang it.
			pfd := []unix.PollFd{{Fd: int32(q.call), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(callWait.Milliseconds()))
			if err != nil && err != unix.EINTR {
				t.Fatalf("polling the call eventfd: %v", err)
			}
			if n == 0 && q.lastUsed == q.usedIdx() {
				t.Fatalf("no used entry and no call notification within %v (have %d of %d replies)", callWait, len(out), want)
			}
			if _, err := unix.Read(q.call, buf[:]); err != nil && err != unix.EAGAIN {
				t.Fatalf("reading the call eventfd: %v", err)
			}
		}
	}
	return out
}

// submit places a request of in bytes with room for outSize reply bytes
// as a direct chain (one readable, one writable descriptor), kicks and
// returns the reply region offset.
func (q *vq) submit(t *testing.T, in []byte, outSize int) (head uint16, outOff uint64) {
	t.Helper()
	inOff := q.g.alloc(uint64(len(in)), 8)
	copy(q.r()[inOff:], in)
	outOff = q.g.alloc(uint64(outSize), 8)
	clear(q.r()[outOff : outOff+uint64(outSize)])
	head = q.nextDesc
	q.putDesc(head, gpa(inOff), uint32(len(in)), descNext, (head+1)%q.size)
	q.putDesc((head+1)%q.size, gpa(outOff), uint32(outSize), descWrite, 0)
	q.nextDesc = (head + 2) % q.size
	q.publish(head)
	q.kickIt(t)
	return head, outOff
}

// frontend is the VMM side of one vhost-user connection.
type frontend struct {
	t    *testing.T
	c    *net.UnixConn
	g    *guest
	vqs  []*vq
	ack  bool // REPLY_ACK negotiated
	feat uint64
}

// send writes one message with fds.
func (f *frontend) send(req request, flags uint32, payload []byte, fds ...int) error {
	b := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(req))
	binary.LittleEndian.PutUint32(b[4:], flagVersion|flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[headerSize:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := f.c.WriteMsgUnix(b, oob, nil)
	return err
}

// reply reads a reply to req.
func (f *frontend) reply(req request) []byte {
	f.t.Helper()
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f.c, hdr[:]); err != nil {
		f.t.Fatalf("reading the reply to %v: %v", req, err)
	}
	if got := request(binary.LittleEndian.Uint32(hdr[:])); got != req {
		f.t.Fatalf("reply to %v is for %v", req, got)
	}
	if fl := binary.LittleEndian.Uint32(hdr[4:]); fl != flagVersion|flagReply {
		f.t.Fatalf("reply to %v has flags %#x", req, fl)
	}
	p := make([]byte, binary.LittleEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(f.c, p); err != nil {
		f.t.Fatalf("reading the reply to %v: %v", req, err)
	}
	return p
}

// do sends a message that needs no reply, asking for an ack when
// REPLY_ACK is on, and fails the test on a NACK.
func (f *frontend) do(req request, payload []byte, fds ...int) {
	f.t.Helper()
	var flags uint32
	if f.ack {
		flags = flagNeedReply
	}
	if err := f.send(req, flags, payload, fds...); err != nil {
		f.t.Fatalf("sending %v: %v", req, err)
	}
	if f.ack {
		if p := f.reply(req); binary.LittleEndian.Uint64(p) != 0 {
			f.t.Fatalf("%v: NACK %d", req, binary.LittleEndian.Uint64(p))
		}
	}
}

func (f *frontend) get(req request, payload []byte) []byte {
	f.t.Helper()
	if err := f.send(req, 0, payload); err != nil {
		f.t.Fatalf("sending %v: %v", req, err)
	}
	return f.reply(req)
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func vringState(index, num uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, index), num)
}

func memTablePayload(regions ...regionDesc) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		for _, v := range []uint64{r.guestAddr, r.size, r.userAddr, r.mmapOffset} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

func (f *frontend) testRegion() regionDesc {
	return regionDesc{guestAddr: testGuestBase, size: testMemSize, userAddr: testUserBase, mmapOffset: testMmapOffset}
}

// negotiate does what QEMU does at device start, up to the memory table.
func (f *frontend) negotiate(features uint64) {
	f.t.Helper()
	offered := binary.LittleEndian.Uint64(f.get(reqGetFeatures, nil))
	if offered&features != features {
		f.t.Fatalf("back-end offers features %#x, test wants %#x", offered, features)
	}
	proto := binary.LittleEndian.Uint64(f.get(reqGetProtocolFeatures, nil))
	f.do(reqSetProtocolFeatures, u64(proto&(protoMQ|protoReplyAck)))
	f.ack = proto&protoReplyAck != 0
	if n := binary.LittleEndian.Uint64(f.get(reqGetQueueNum, nil)); n < 2 {
		f.t.Fatalf("GET_QUEUE_NUM = %d", n)
	}
	f.do(reqSetOwner, nil)
	f.do(reqSetFeatures, u64(features|featProtocolFeatures))
	f.feat = features
	f.do(reqSetMemTable, memTablePayload(f.testRegion()), f.g.fd)
}

// startQueue sets up and kicks off queue q.
func (f *frontend) startQueue(q *vq) {
	f.t.Helper()
	var err error
	if q.kick, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		f.t.Fatal(err)
	}
	if q.call, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { unix.Close(q.kick); unix.Close(q.call) })
	idx := uint32(q.index)
	f.do(reqSetVringNum, vringState(idx, uint32(q.size)))
	f.do(reqSetVringBase, vringState(idx, 0))
	addr := binary.LittleEndian.AppendUint32(nil, idx)
	addr = binary.LittleEndian.AppendUint32(addr, 0)
	for _, v := range []uint64{uaddr(q.desc), uaddr(q.used), uaddr(q.avail), 0} {
		addr = binary.LittleEndian.AppendUint64(addr, v)
	}
	f.do(reqSetVringAddr, addr)
	f.do(reqSetVringCall, u64(uint64(idx)), q.call)
	f.do(reqSetVringKick, u64(uint64(idx)), q.kick)
	f.do(reqSetVringEnable, vringState(idx, 1))
}

// logBuffer collects log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines containing s.
func (l *logBuffer) lines(s string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// backend is a conn served over a socketpair, for tests of one session.
type backend struct {
	log  *logBuffer
	done chan struct{}
	c    *conn
}

// startSession serves one connection on a socketpair and returns the
// front-end side. The session is stopped and waited for at cleanup.
func startSession(t *testing.T, newFS func() fuse.RawFileSystem) (*frontend, *backend) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	front, back := mk(fds[0]), mk(fds[1])
	lb := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(lb, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newConn(back, connConfig{newFS: newFS, opts: fuse.MountOptions{MaxWrite: DefaultMaxWrite}, workers: 4, log: log})
	b := &backend{log: lb, done: make(chan struct{}), c: c}
	go func() {
		defer close(b.done)
		c.serve()
	}()
	t.Cleanup(func() {
		front.Close()
		<-b.done
	})
	return &frontend{t: t, c: front, g: newGuest(t)}, b
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// expectDropped waits until the back-end closes the connection and
// checks it logged exactly one line about it, containing want.
func (f *frontend) expectDropped(b *backend, want string) {
	f.t.Helper()
	var buf [64]byte
	for {
		_, err := f.c.Read(buf[:])
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				f.t.Fatalf("waiting for the back-end to drop the connection: %v", err)
			}
			break
		}
	}
	<-b.done
	lines := b.log.lines("level=ERROR")
	if len(lines) != 1 {
		f.t.Fatalf("got %d error log lines, want 1:\n%s", len(lines), b.log.String())
	}
	if !strings.Contains(lines[0], want) {
		f.t.Errorf("log line %q does not mention %q", lines[0], want)
	}
}

// testFS is a small tree served through go-fuse's node API: what the
// FUSE frontend does with vfs, minus vfs.
func testFS() fuse.RawFileSystem {
	root := &fs.Inode{}
	return fs.NewNodeFS(&testRoot{Inode: root}, &fs.Options{})
}

type testRoot struct {
	*fs.Inode
}

func (r *testRoot) EmbeddedInode() *fs.Inode { return r.Inode }

var _ fs.NodeOnAdder = (*testRoot)(nil)

// testFileData is hello's content: larger than one page so reads cross
// buffers.
var testFileData = bytes.Repeat([]byte("0123456789abcdef"), 1024)

func (r *testRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &fs.MemRegularFile{Data: testFileData, Attr: fuse.Attr{Mode: 0o444}}, fs.StableAttr{Ino: 42})
	r.AddChild("hello", ch, false)
}

// FUSE request builders.

// uniqueCounter numbers requests across tests running in parallel.
var uniqueCounter atomic.Uint64

func fuseReq(opcode uint32, nodeID uint64, body []byte) []byte {
	var h fuse.InHeader
	h.Length = uint32(int(unsafe.Sizeof(h)) + len(body))
	h.Opcode = opcode
	h.Unique = uniqueCounter.Add(1)
	h.NodeId = nodeID
	b := append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h))...)
	return append(b, body...)
}

func structBytes[T any](v *T) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))...)
}

func initReq() []byte {
	in := fuse.InitIn{Major: 7, Minor: 38, MaxReadAhead: 128 << 10, Flags: fuse.CAP_ASYNC_READ | fuse.CAP_READDIRPLUS}
	return fuseReq(opInit, 0, structBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):])
}

func lookupReq(parent uint64, name string) []byte {
	return fuseReq(1, parent, append([]byte(name), 0))
}

func openReq(node uint64) []byte {
	in := fuse.OpenIn{Flags: uint32(os.O_RDONLY)}
	return fuseReq(14, node, structBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):])
}

func readReq(node, fh, off uint64, size uint32) []byte {
	in := fuse.ReadIn{Fh: fh, Offset: off, Size: size}
	return fuseReq(15, node, structBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):])
}

func mkdirReq(parent uint64, name string) []byte {
	in := fuse.MkdirIn{Mode: 0o755}
	return fuseReq(9, parent, append(structBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):], append([]byte(name), 0)...))
}

// outHeader decodes a reply's header.
func outHeader(b []byte) (length uint32, errno int32, unique uint64) {
	return binary.LittleEndian.Uint32(b), int32(binary.LittleEndian.Uint32(b[4:])), binary.LittleEndian.Uint64(b[8:])
}

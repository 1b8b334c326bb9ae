//go:build linux

package virtiofs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const allFeatures = featVersion1 | featEventIdx | featIndirectDesc

// mounted negotiates features, starts the high-priority queue and one
// request queue and answers FUSE_INIT; it returns the request queue.
func mounted(t *testing.T, f *frontend, features uint64) *vq {
	t.Helper()
	f.negotiate(features)
	hi, req := newVQ(f.g, 0, testQueueSize), newVQ(f.g, 1, testQueueSize)
	f.vqs = []*vq{hi, req}
	f.startQueue(hi)
	f.startQueue(req)
	fuseInit(t, req)
	return req
}

func fuseInit(t *testing.T, q *vq) {
	t.Helper()
	in := initReq()
	_, outOff := q.submit(t, in, 16+int(unsafe.Sizeof(fuse.InitOut{})))
	used := q.waitUsed(t, 1)
	out := q.r()[outOff:]
	length, errno, unique := outHeader(out)
	if errno != 0 || unique != binary.LittleEndian.Uint64(in[8:]) || used[0][1] != length {
		t.Fatalf("INIT reply: len %d errno %d unique %d, used len %d", length, errno, unique, used[0][1])
	}
	init := (*fuse.InitOut)(unsafe.Pointer(&out[16]))
	if init.Major != 7 || init.Minor == 0 || init.MaxPages == 0 {
		t.Fatalf("InitOut %+v", *init)
	}
}

// call sends one request with outSize bytes of reply space and returns the
// reply as written (used length bytes).
func call(t *testing.T, q *vq, in []byte, outSize int) []byte {
	t.Helper()
	head, outOff := q.submit(t, in, outSize)
	used := q.waitUsed(t, 1)
	if used[0][0] != uint32(head) {
		t.Fatalf("used id %d, want %d", used[0][0], head)
	}
	return append([]byte(nil), q.r()[outOff:outOff+uint64(used[0][1])]...)
}

func lookup(t *testing.T, q *vq, parent uint64, name string) uint64 {
	t.Helper()
	out := call(t, q, lookupReq(parent, name), 16+int(unsafe.Sizeof(fuse.EntryOut{})))
	if _, errno, _ := outHeader(out); errno != 0 {
		t.Fatalf("LOOKUP %s: errno %d", name, -errno)
	}
	e := (*fuse.EntryOut)(unsafe.Pointer(&out[16]))
	if e.Ino != 42 || e.Size != uint64(len(testFileData)) {
		t.Fatalf("LOOKUP %s: ino %d size %d", name, e.Ino, e.Size)
	}
	return e.NodeId
}

func open(t *testing.T, q *vq, node uint64) uint64 {
	t.Helper()
	out := call(t, q, openReq(node), 16+int(unsafe.Sizeof(fuse.OpenOut{})))
	if _, errno, _ := outHeader(out); errno != 0 {
		t.Fatalf("OPEN: errno %d", -errno)
	}
	return (*fuse.OpenOut)(unsafe.Pointer(&out[16])).Fh
}

// readIndirect reads size bytes at off through an indirect chain whose
// reply is split into a header buffer and page-sized pieces, as the Linux
// driver sends a READ, and returns the data.
func readIndirect(t *testing.T, q *vq, node, fh, off uint64, size int) []byte {
	t.Helper()
	g := q.g
	in := readReq(node, fh, off, uint32(size))
	inOff := g.alloc(uint64(len(in)), 8)
	copy(g.region()[inOff:], in)
	hdrOff := g.alloc(16, 8)
	const page = 4096
	var pieces []uint64
	for n := 0; n < size; n += page {
		pieces = append(pieces, g.alloc(page, page))
	}
	table := g.alloc(16*uint64(2+len(pieces)), 16)
	n := uint16(2 + len(pieces))
	q.putDescAt(table, 0, gpa(inOff), uint32(len(in)), descNext, 1)
	q.putDescAt(table, 1, gpa(hdrOff), 16, descNext|descWrite, 2)
	for i, p := range pieces {
		flags := uint16(descWrite)
		if uint16(i+3) < n {
			flags |= descNext
		}
		q.putDescAt(table, uint16(i+2), gpa(p), page, flags, uint16(i+3))
	}
	head := q.nextDesc
	q.putDesc(head, gpa(table), 16*uint32(n), descIndirect, 0)
	q.nextDesc = (head + 1) % q.size
	q.publish(head)
	q.kickIt(t)
	used := q.waitUsed(t, 1)
	length, errno, _ := outHeader(g.region()[hdrOff:])
	if errno != 0 {
		t.Fatalf("READ: errno %d", -errno)
	}
	if used[0][1] != length {
		t.Errorf("used length %d, reply length %d", used[0][1], length)
	}
	var data []byte
	for _, p := range pieces {
		data = append(data, g.region()[p:p+page]...)
	}
	return data[:length-16]
}

// TestSession walks a guest through what Linux does: negotiate, start
// the queues, INIT, LOOKUP, OPEN, READ through an indirect table, a
// refused write, DESTROY and a second INIT on the same connection, and
// stopping the queue with GET_VRING_BASE.
func TestSession(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{
		{"event-idx", allFeatures},
		{"no-event-idx", featVersion1 | featIndirectDesc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, b := startSession(t, testFS)
			q := mounted(t, f, tc.features)
			for round := range 2 {
				node := lookup(t, q, 1, "hello")
				fh := open(t, q, node)
				if got := readIndirect(t, q, node, fh, 0, 3*4096); !bytes.Equal(got, testFileData[:3*4096]) {
					t.Fatalf("round %d: READ returned other bytes", round)
				}
				if got := readIndirect(t, q, node, fh, 16000, 8192); !bytes.Equal(got, testFileData[16000:]) {
					t.Fatalf("round %d: READ at the end returned %d bytes", round, len(got))
				}
				out := call(t, q, mkdirReq(1, "new"), 16+int(unsafe.Sizeof(fuse.EntryOut{})))
				if _, errno, _ := outHeader(out); errno >= 0 || len(out) != 16 {
					t.Fatalf("MKDIR: errno %d, %d bytes", errno, len(out))
				}
				// Unmount, then mount again over the same connection.
				out = call(t, q, fuseReq(opDestroy, 0, nil), 16)
				if _, errno, _ := outHeader(out); errno != 0 {
					t.Fatalf("DESTROY: errno %d", errno)
				}
				out = call(t, q, lookupReq(1, "hello"), 16+int(unsafe.Sizeof(fuse.EntryOut{})))
				if _, errno, _ := outHeader(out); errno != -int32(syscall.EIO) {
					t.Fatalf("LOOKUP after DESTROY: errno %d, want -EIO", errno)
				}
				fuseInit(t, q)
			}
			p := f.get(reqGetVringBase, vringState(1, 0))
			if idx, base := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:]); idx != 1 || base != uint32(q.availIdx) {
				t.Errorf("GET_VRING_BASE = queue %d base %d, want 1 %d", idx, base, q.availIdx)
			}
			if q.usedIdx() != q.availIdx {
				t.Errorf("used index %d, available %d: a request was lost", q.usedIdx(), q.availIdx)
			}
			if lines := b.log.lines("level=ERROR"); len(lines) != 0 {
				t.Errorf("errors logged: %q", lines)
			}
		})
	}
}

// TestRestartQueue stops a queue with GET_VRING_BASE and restarts it from
// the returned base, as QEMU does when the guest resets the device.
func TestRestartQueue(t *testing.T) {
	f, _ := startSession(t, testFS)
	q := mounted(t, f, allFeatures)
	lookup(t, q, 1, "hello")
	p := f.get(reqGetVringBase, vringState(1, 0))
	base := binary.LittleEndian.Uint32(p[4:])
	// A request queued while the ring is stopped is served after the
	// restart without another kick.
	q.submit(t, lookupReq(1, "hello"), 16+int(unsafe.Sizeof(fuse.EntryOut{})))
	f.do(reqSetVringBase, vringState(1, base))
	kick := q.kick
	f.do(reqSetVringKick, u64(1), kick)
	q.waitUsed(t, 1)
	lookup(t, q, 1, "hello")
}

// TestFUSEErrors sends requests the FUSE layer must refuse without
// dropping the connection.
func TestFUSEErrors(t *testing.T) {
	f, _ := startSession(t, testFS)
	q := mounted(t, f, allFeatures)
	node := lookup(t, q, 1, "hello")
	fh := open(t, q, node)

	t.Run("shorter than a header", func(t *testing.T) {
		head, _ := q.submit(t, []byte("short"), 64)
		if used := q.waitUsed(t, 1); used[0] != [2]uint32{uint32(head), 0} {
			t.Errorf("used %v, want head %d with length 0", used[0], head)
		}
	})
	t.Run("reply buffer too small", func(t *testing.T) {
		in := readReq(node, fh, 0, 4096)
		out := call(t, q, in, 16)
		if _, errno, unique := outHeader(out); errno != -int32(syscall.EIO) || unique != binary.LittleEndian.Uint64(in[8:]) {
			t.Errorf("errno %d unique %d, want -EIO for %d", errno, unique, binary.LittleEndian.Uint64(in[8:]))
		}
	})
	t.Run("no room for a reply header", func(t *testing.T) {
		head, _ := q.submit(t, lookupReq(1, "hello"), 8)
		if used := q.waitUsed(t, 1); used[0] != [2]uint32{uint32(head), 0} {
			t.Errorf("used %v, want head %d with length 0", used[0], head)
		}
	})
	t.Run("header length lies", func(t *testing.T) {
		in := lookupReq(1, "hello")
		binary.LittleEndian.PutUint32(in, 4000)
		out := call(t, q, in, 16+int(unsafe.Sizeof(fuse.EntryOut{})))
		if len(out) < 16 {
			t.Fatalf("reply of %d bytes", len(out))
		}
	})
	t.Run("unknown opcode", func(t *testing.T) {
		out := call(t, q, fuseReq(9999, 1, nil), 64)
		if _, errno, _ := outHeader(out); errno != -int32(syscall.ENOSYS) {
			t.Errorf("errno %d, want -ENOSYS", errno)
		}
	})
	// Still serving.
	lookup(t, q, 1, "hello")
}

// TestRequestBeforeInit answers EIO until the guest sends INIT.
func TestRequestBeforeInit(t *testing.T) {
	f, _ := startSession(t, testFS)
	f.negotiate(allFeatures)
	q := newVQ(f.g, 1, testQueueSize)
	f.startQueue(q)
	out := call(t, q, lookupReq(1, "hello"), 64)
	if _, errno, _ := outHeader(out); errno != -int32(syscall.EIO) {
		t.Fatalf("errno %d, want -EIO", errno)
	}
	fuseInit(t, q)
	lookup(t, q, 1, "hello")
}

// TestParallelQueues serves several request queues at once.
func TestParallelQueues(t *testing.T) {
	f, _ := startSession(t, testFS)
	f.negotiate(allFeatures)
	var qs []*vq
	for i := range 4 {
		q := newVQ(f.g, i, testQueueSize)
		f.startQueue(q)
		qs = append(qs, q)
	}
	fuseInit(t, qs[1])
	// Parallel subtests of one group: the group returns when all are done.
	t.Run("queues", func(t *testing.T) {
		for _, q := range qs[1:] {
			t.Run(fmt.Sprint(q.index), func(t *testing.T) {
				t.Parallel()
				// Several requests in flight on one queue.
				var heads []uint16
				for range 5 {
					h, _ := q.submit(t, lookupReq(1, "hello"), 16+int(unsafe.Sizeof(fuse.EntryOut{})))
					heads = append(heads, h)
				}
				used := q.waitUsed(t, len(heads))
				seen := map[uint32]bool{}
				for _, u := range used {
					seen[u[0]] = true
				}
				for _, h := range heads {
					if !seen[uint32(h)] {
						t.Errorf("queue %d: head %d never used", q.index, h)
					}
				}
			})
		}
	})
}

// TestSyncFS answers the guest's FUSE_SYNCFS (sent on sync and at
// shutdown) with success and no log line.
func TestSyncFS(t *testing.T) {
	f, b := startSession(t, testFS)
	q := mounted(t, f, allFeatures)
	out := call(t, q, fuseReq(opSyncFS, 1, make([]byte, 8)), 64)
	if length, errno, _ := outHeader(out); errno != 0 || length != 16 || len(out) != 16 {
		t.Errorf("SYNCFS reply: length %d errno %d, %d bytes used", length, errno, len(out))
	}
	if lines := b.log.lines("level=WARN"); len(lines) != 0 {
		t.Errorf("logged %q", lines)
	}
}

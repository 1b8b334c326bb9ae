//go:build linux

package virtiofs

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHostileChains sends descriptor chains a broken or malicious guest
// could build. Each must drop the connection with one log line, without a
// panic and without touching memory outside the guest's.
func TestHostileChains(t *testing.T) {
	const size = testQueueSize
	for _, tc := range []struct {
		name     string
		features uint64
		// build writes descriptors and returns the head to publish.
		build func(q *vq) uint16
		want  string
	}{
		{
			name: "buffer outside guest memory",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(testMemSize+4096), 64, 0, 0)
				return 0
			},
			want: "not in guest memory",
		},
		{
			name: "buffer below guest memory",
			build: func(q *vq) uint16 {
				q.putDesc(0, testGuestBase-8, 64, 0, 0)
				return 0
			},
			want: "not in guest memory",
		},
		{
			name: "buffer crossing the end of guest memory",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(testMemSize-16), 64, descWrite, 0)
				return 0
			},
			want: "not in guest memory",
		},
		{
			name: "buffer wrapping the address space",
			build: func(q *vq) uint16 {
				q.putDesc(0, ^uint64(0)-8, 64, 0, 0)
				return 0
			},
			want: "wraps around",
		},
		{
			name: "loop",
			build: func(q *vq) uint16 {
				buf := gpa(q.g.alloc(64, 8))
				q.putDesc(3, buf, 64, descNext, 4)
				q.putDesc(4, buf, 64, descNext, 3)
				return 3
			},
			want: "a loop",
		},
		{
			name: "self loop",
			build: func(q *vq) uint16 {
				q.putDesc(5, gpa(q.g.alloc(64, 8)), 64, descNext|descWrite, 5)
				return 5
			},
			want: "a loop",
		},
		{
			name:  "head out of range",
			build: func(q *vq) uint16 { return size + 3 },
			want:  "out of a ring",
		},
		{
			name: "next out of range",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(64, 8)), 64, descNext, size)
				return 0
			},
			want: "out of a table",
		},
		{
			name: "readable after writable",
			build: func(q *vq) uint16 {
				buf := gpa(q.g.alloc(64, 8))
				q.putDesc(0, buf, 64, descNext|descWrite, 1)
				q.putDesc(1, buf, 64, 0, 0)
				return 0
			},
			want: "readable descriptor after a writable",
		},
		{
			name:     "indirect without the feature",
			features: featVersion1 | featEventIdx,
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(32, 16)), 32, descIndirect, 0)
				return 0
			},
			want: "without VIRTIO_RING_F_INDIRECT_DESC",
		},
		{
			name: "indirect table of a bad length",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(32, 16)), 17, descIndirect, 0)
				return 0
			},
			want: "indirect table of 17 bytes",
		},
		{
			name: "empty indirect table",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(32, 16)), 0, descIndirect, 0)
				return 0
			},
			want: "indirect table of 0 bytes",
		},
		{
			name: "huge indirect table",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(0), 16*(maxIndirect+1), descIndirect, 0)
				return 0
			},
			want: "indirect table of",
		},
		{
			name: "indirect table outside guest memory",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(testMemSize), 32, descIndirect, 0)
				return 0
			},
			want: "not in guest memory",
		},
		{
			name: "indirect with next",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(32, 16)), 32, descIndirect|descNext, 1)
				return 0
			},
			want: "indirect descriptor inside a chain",
		},
		{
			name: "indirect after a direct descriptor",
			build: func(q *vq) uint16 {
				q.putDesc(0, gpa(q.g.alloc(64, 8)), 64, descNext, 1)
				q.putDesc(1, gpa(q.g.alloc(32, 16)), 32, descIndirect, 0)
				return 0
			},
			want: "indirect descriptor inside a chain",
		},
		{
			name: "nested indirect",
			build: func(q *vq) uint16 {
				table := q.g.alloc(32, 16)
				inner := q.g.alloc(32, 16)
				q.putDescAt(table, 0, gpa(inner), 32, descIndirect, 0)
				q.putDesc(0, gpa(table), 32, descIndirect, 0)
				return 0
			},
			want: "indirect descriptor inside a chain",
		},
		{
			name: "loop in an indirect table",
			build: func(q *vq) uint16 {
				table := q.g.alloc(32, 16)
				buf := gpa(q.g.alloc(64, 8))
				q.putDescAt(table, 0, buf, 64, descNext, 1)
				q.putDescAt(table, 1, buf, 64, descNext, 0)
				q.putDesc(0, gpa(table), 32, descIndirect, 0)
				return 0
			},
			want: "a loop",
		},
		{
			name: "next out of an indirect table",
			build: func(q *vq) uint16 {
				table := q.g.alloc(32, 16)
				q.putDescAt(table, 0, gpa(q.g.alloc(64, 8)), 64, descNext, 2)
				q.putDesc(0, gpa(table), 32, descIndirect, 0)
				return 0
			},
			want: "out of a table of 2",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, b := startSession(t, testFS)
			features := tc.features
			if features == 0 {
				features = allFeatures
			}
			q := mounted(t, f, features)
			head := tc.build(q)
			q.publish(head)
			q.kickIt(t)
			f.expectDropped(b, tc.want)
		})
	}
}

// TestAvailIndexJump drops a guest whose available index runs more than
// a ring's worth ahead of what was consumed.
func TestAvailIndexJump(t *testing.T) {
	f, b := startSession(t, testFS)
	q := mounted(t, f, allFeatures)
	binary.LittleEndian.PutUint16(q.r()[q.avail+2:], q.availIdx+testQueueSize+1)
	q.kickIt(t)
	f.expectDropped(b, "available index jumped")
}

// TestHostileMessages sends vhost-user messages a broken or malicious VMM
// could send. Each must drop the connection with one log line.
func TestHostileMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		// send misbehaves, after negotiate if negotiated.
		negotiated bool
		send       func(t *testing.T, f *frontend) error
		want       string
	}{
		{
			name: "unknown request",
			send: func(t *testing.T, f *frontend) error { return f.send(99, 0, nil) },
			want: "unknown vhost-user request request(99)",
		},
		{
			name: "unknown request with an fd",
			send: func(t *testing.T, f *frontend) error { return f.send(99, 0, u64(0), f.g.fd) },
			want: "unknown vhost-user request",
		},
		{
			name: "wrong payload length",
			send: func(t *testing.T, f *frontend) error { return f.send(reqSetVringNum, 0, []byte{1, 2, 3, 4}) },
			want: "payload of 4 bytes, want 8",
		},
		{
			name: "payload over the limit",
			send: func(t *testing.T, f *frontend) error {
				return f.send(reqSetMemTable, 0, make([]byte, maxPayload+1))
			},
			want: "over the limit",
		},
		{
			name: "wrong protocol version",
			send: func(t *testing.T, f *frontend) error {
				b := make([]byte, headerSize)
				binary.LittleEndian.PutUint32(b, uint32(reqGetFeatures))
				binary.LittleEndian.PutUint32(b[4:], 2)
				_, err := f.c.Write(b)
				return err
			},
			want: "unsupported protocol version",
		},
		{
			name: "truncated message",
			send: func(t *testing.T, f *frontend) error {
				b := make([]byte, headerSize+3)
				binary.LittleEndian.PutUint32(b, uint32(reqSetFeatures))
				binary.LittleEndian.PutUint32(b[4:], flagVersion)
				binary.LittleEndian.PutUint32(b[8:], 8)
				if _, err := f.c.Write(b); err != nil {
					return err
				}
				return f.c.CloseWrite()
			},
			want: "unexpected EOF",
		},
		{
			name: "features never offered",
			send: func(t *testing.T, f *frontend) error { return f.send(reqSetFeatures, 0, u64(1<<40)) },
			want: "never offered",
		},
		{
			name: "queue size not a power of two",
			send: func(t *testing.T, f *frontend) error { return f.send(reqSetVringNum, 0, vringState(1, 1000)) },
			want: "power of 2",
		},
		{
			name: "queue too large",
			send: func(t *testing.T, f *frontend) error { return f.send(reqSetVringNum, 0, vringState(1, 2048)) },
			want: "power of 2",
		},
		{
			name: "queue index out of range",
			send: func(t *testing.T, f *frontend) error { return f.send(reqSetVringNum, 0, vringState(200, 16)) },
			want: "want below 64",
		},
		{
			name: "memory regions without fds",
			send: func(t *testing.T, f *frontend) error {
				r := f.testRegion()
				r2 := r
				r2.guestAddr += testMemSize
				return f.send(reqSetMemTable, 0, memTablePayload(r, r2), f.g.fd)
			},
			want: "2 memory regions but 1 file descriptors",
		},
		{
			name: "memory region larger than its file",
			send: func(t *testing.T, f *frontend) error {
				r := f.testRegion()
				r.size *= 2
				return f.send(reqSetMemTable, 0, memTablePayload(r), f.g.fd)
			},
			want: "shorter than the region's end",
		},
		{
			name: "too many memory regions",
			send: func(t *testing.T, f *frontend) error {
				regions := make([]regionDesc, maxRegions+1)
				return f.send(reqSetMemTable, 0, memTablePayload(regions...))
			},
			want: "9 regions",
		},
		{
			name: "too many fds",
			send: func(t *testing.T, f *frontend) error {
				fds := make([]int, maxFDs+4)
				for i := range fds {
					fds[i] = f.g.fd
				}
				return f.send(reqSetMemTable, 0, memTablePayload(f.testRegion()), fds...)
			},
			want: "too many file descriptors",
		},
		{
			name:       "ring outside guest memory",
			negotiated: true,
			send: func(t *testing.T, f *frontend) error {
				q := newVQ(f.g, 1, testQueueSize)
				q.desc = testMemSize - 64 // the table runs past the end
				f.ack = false             // no NACK to read: the drop is the answer
				f.startQueue(q)
				return nil
			},
			want: "not in guest memory",
		},
		{
			name:       "kick without fd (polling)",
			negotiated: true,
			send: func(t *testing.T, f *frontend) error {
				f.do(reqSetVringNum, vringState(1, 16))
				return f.send(reqSetVringKick, 0, u64(1|vringNoFD))
			},
			want: "polling",
		},
		{
			name:       "kick before the ring is set up",
			negotiated: true,
			send: func(t *testing.T, f *frontend) error {
				fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				return f.send(reqSetVringKick, 0, u64(1), fd)
			},
			want: "kicked before its size and addresses were set",
		},
		{
			name: "kick before the memory table",
			send: func(t *testing.T, f *frontend) error {
				q := newVQ(f.g, 1, testQueueSize)
				f.startQueue(q)
				return nil
			},
			want: "before SET_MEM_TABLE",
		},
		{
			name:       "kick with two fds",
			negotiated: true,
			send: func(t *testing.T, f *frontend) error {
				return f.send(reqSetVringKick, 0, u64(1), f.g.fd, f.g.fd)
			},
			want: "got 2 file descriptors, want 1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, b := startSession(t, testFS)
			if tc.negotiated {
				f.negotiate(allFeatures)
			}
			if err := tc.send(t, f); err != nil {
				t.Fatal(err)
			}
			f.expectDropped(b, tc.want)
		})
	}
}

// TestNackWithReplyAck checks a failed message is NACKed before the
// connection drops when the VMM asked for acks.
func TestNackWithReplyAck(t *testing.T) {
	f, b := startSession(t, testFS)
	f.negotiate(allFeatures)
	if err := f.send(reqSetVringNum, flagNeedReply, vringState(1, 3)); err != nil {
		t.Fatal(err)
	}
	if p := f.reply(reqSetVringNum); binary.LittleEndian.Uint64(p) == 0 {
		t.Error("bad SET_VRING_NUM acked")
	}
	f.expectDropped(b, "power of 2")
}

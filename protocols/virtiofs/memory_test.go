//go:build linux

package virtiofs

import (
	"bytes"
	"testing"
)

// TestAppendGuestJoinsNeighbours: descriptors that are neighbours in
// guest memory become one buffer; others, and buffers of regions that are
// not neighbours in our memory, stay apart. The bytes are the guest's
// either way.
func TestAppendGuestJoinsNeighbours(t *testing.T) {
	backing := make([]byte, 4*4096)
	for i := range backing {
		backing[i] = byte(i / 4096)
	}
	mem := &guestMemory{regions: []memRegion{
		{guestAddr: 0x10000, data: backing[: 2*4096 : 2*4096]},
		// A second region, next in guest memory but not in ours.
		{guestAddr: 0x12000, data: backing[3*4096:]},
	}}
	size := func(iov [][]byte) (n int) {
		for _, b := range iov {
			n += len(b)
		}
		return n
	}
	for _, tc := range []struct {
		name  string
		descs [][2]uint64 // guest address, length
		want  int         // buffers
		bytes []byte
	}{
		{"neighbours", [][2]uint64{{0x10000, 4096}, {0x11000, 4096}}, 1, append(bytes.Repeat([]byte{0}, 4096), bytes.Repeat([]byte{1}, 4096)...)},
		{"reversed", [][2]uint64{{0x11000, 4096}, {0x10000, 4096}}, 2, append(bytes.Repeat([]byte{1}, 4096), bytes.Repeat([]byte{0}, 4096)...)},
		{"gap", [][2]uint64{{0x10000, 100}, {0x10200, 100}}, 2, make([]byte, 200)},
		{"across regions", [][2]uint64{{0x11800, 0x1000}}, 2, append(bytes.Repeat([]byte{1}, 0x800), bytes.Repeat([]byte{3}, 0x800)...)},
		{"one spanning chain", [][2]uint64{{0x10000, 0x800}, {0x10800, 0x800}, {0x11000, 0x1800}}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var iov [][]byte
			total := 0
			for _, d := range tc.descs {
				var err error
				if iov, err = mem.appendGuest(iov, d[0], d[1]); err != nil {
					t.Fatal(err)
				}
				total += int(d[1])
			}
			if len(iov) != tc.want {
				t.Errorf("%d buffers, want %d", len(iov), tc.want)
			}
			if size(iov) != total {
				t.Errorf("%d bytes, want %d", size(iov), total)
			}
			if tc.bytes != nil && !bytes.Equal(bytes.Join(iov, nil), tc.bytes) {
				t.Errorf("the buffers do not hold the guest's bytes in descriptor order")
			}
		})
	}
}

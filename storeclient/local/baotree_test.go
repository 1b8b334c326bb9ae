package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

// outboardData returns n bytes that differ in every chunk group.
func outboardData(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestTreeHasher checks the outboard built while a blob is written, in
// writes of every kind of size, against storeclient.EncodeOutboard.
func TestTreeHasher(t *testing.T) {
	const g = storeclient.BaoGroupSize
	for _, size := range []int{0, 1, 1023, 1024, 1025, g - 1, g, g + 1, 2 * g, 2*g + 1, 3*g + 5, 16 * g, 17*g - 1, 1 << 20, 1<<20 + 1, 5<<20 + 123} {
		data := outboardData(size, uint64(size))
		want, wantRoot, err := storeclient.EncodeOutboard(bytes.NewReader(data), int64(size))
		if err != nil {
			t.Fatal(err)
		}
		if wantRoot != storeclient.HashBytes(data) {
			t.Fatalf("size %d: EncodeOutboard's root is not the digest", size)
		}
		for _, write := range []int{7, 1000, g, g + 3, 1 << 20, size + 1} {
			t.Run(fmt.Sprintf("size=%d/write=%d", size, write), func(t *testing.T) {
				h := newTreeHasher()
				for off := 0; off < size; off += write {
					h.Write(data[off:min(off+write, size)])
				}
				enc, root, ok := h.finish()
				if !ok {
					t.Fatal("no outboard")
				}
				if root != wantRoot {
					t.Errorf("root %s, want %s", root, wantRoot)
				}
				if !bytes.Equal(enc, want) {
					t.Errorf("outboard of %d bytes differs from EncodeOutboard's %d", len(enc), len(want))
				}
			})
		}
	}
}

// TestCheckOutboard checks that every byte of an outboard is checked: a
// flip anywhere is found without the blob's bytes.
func TestCheckOutboard(t *testing.T) {
	const g = storeclient.BaoGroupSize
	for _, size := range []int{0, g, g + 1, 2 * g, 5*g + 7, 17 * g, 64*g + 1} {
		data := outboardData(size, 3)
		d := storeclient.HashBytes(data)
		enc, _, err := storeclient.EncodeOutboard(bytes.NewReader(data), int64(size))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkOutboard(d, int64(size), enc); err != nil {
			t.Fatalf("size %d: good outboard refused: %v", size, err)
		}
		for i := range enc {
			bad := bytes.Clone(enc)
			bad[i] ^= 0x10
			if err := checkOutboard(d, int64(size), bad); !errors.Is(err, storeclient.ErrCorrupt) {
				t.Errorf("size %d: flip at byte %d of %d: %v, want ErrCorrupt", size, i, len(enc), err)
			}
		}
		if len(enc) > 8 {
			zeroed := bytes.Clone(enc)
			clear(zeroed[len(zeroed)-64:]) // a torn end, as a crash may leave
			if err := checkOutboard(d, int64(size), zeroed); err == nil {
				t.Errorf("size %d: outboard with a zeroed end accepted", size)
			}
		}
		if err := checkOutboard(d, int64(size), enc[:len(enc)-1]); err == nil {
			t.Errorf("size %d: short outboard accepted", size)
		}
		other := storeclient.HashBytes([]byte("another blob"))
		if err := checkOutboard(other, int64(size), enc); size > g && err == nil {
			t.Errorf("size %d: outboard accepted for another digest", size)
		}
	}
}

var _ io.Writer = (*treeHasher)(nil)

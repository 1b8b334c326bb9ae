package nfs

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
)

// TestXDRLengths checks that lengths that do not fit are refused without
// a panic, on 64-bit and 32-bit ints alike.
func TestXDRLengths(t *testing.T) {
	for _, n := range []int{-1, 5, math.MaxInt32, math.MaxInt32 - 2, math.MaxInt} {
		r := xdrReader{b: []byte{1, 2, 3, 4}}
		if v := r.fixed(n); v != nil || r.err == nil {
			t.Errorf("fixed(%d) of 4 bytes = %x, %v", n, v, r.err)
		}
	}
	r := xdrReader{b: []byte{1, 2, 3}}
	if v := r.fixed(3); len(v) != 0 || r.err == nil {
		t.Errorf("fixed(3) of 3 bytes (padding missing) = %x, %v", v, r.err)
	}
	for _, n := range []uint32{5, 1 << 31, math.MaxUint32} {
		var w xdrWriter
		w.u32(n)
		w.u32(0)
		r := xdrReader{b: w.b}
		if v := r.opaque(4); v != nil || r.err == nil {
			t.Errorf("opaque(4) of length %d = %x, %v", n, v, r.err)
		}
	}
}

// TestXDRName checks filename3 decoding: up to 255 bytes a name, longer
// and present too long, longer than the request malformed.
func (w *xdrWriter) stringArg(s string) []byte {
	w.string(s)
	return w.b
}

// TestReadRecordAllocatesAsBytesArrive checks that a record that declares
// its maximum size and sends little costs little.
func TestReadRecordAllocatesAsBytesArrive(t *testing.T) {
	const max = 64 << 20
	msg := []byte{0x83, 0xff, 0xff, 0xff, 1, 2, 3, 4} // 64 MiB - 1 declared, 4 sent
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rec, err := readRecord(bufio.NewReader(bytes.NewReader(msg)), nil, max)
	runtime.ReadMemStats(&after)
	if rec != nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readRecord = %d bytes, %v; want ErrUnexpectedEOF", len(rec), err)
	}
	// The old reader allocated the whole 64 MiB; allow for the bufio
	// buffer, one chunk and the race detector's overhead.
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("readRecord allocated %d bytes for a record of 4 bytes", got)
	}
	// Several fragments make one record; the limit counts them together.
	var w xdrWriter
	w.u32(4)
	w.u32(0xaaaaaaaa)
	w.u32(1<<31 | 4)
	w.u32(0xbbbbbbbb)
	rec, err = readRecord(bufio.NewReader(bytes.NewReader(w.b)), nil, 8)
	if err != nil || !bytes.Equal(rec, []byte{0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb}) {
		t.Errorf("two fragments = %x, %v", rec, err)
	}
	if _, err := readRecord(bufio.NewReader(bytes.NewReader(w.b)), nil, 7); !errors.Is(err, errRecordTooLarge) {
		t.Errorf("two fragments over the limit: %v, want errRecordTooLarge", err)
	}
}

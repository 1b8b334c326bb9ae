package nfs

import (
	"encoding/binary"
	"errors"
)

// errGarbage is the cause of every malformed request body: the caller
// answers GARBAGE_ARGS.
var errGarbage = errors.New("nfs: malformed XDR")

// xdrReader decodes XDR (RFC 4506) from a byte slice. The first failure
// sticks: later reads return zero values, and err reports it once at the end,
// so decoders read a whole argument list and check once.
type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) fail() { r.err, r.b = errGarbage, nil }

func (r *xdrReader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// fixed reads n bytes of fixed-length opaque data (padded to 4). n is
// compared with what is left before any arithmetic on it, so that no n
// overflows.
func (r *xdrReader) fixed(n int) []byte {
	if n < 0 || n > len(r.b) || n+(-n&3) > len(r.b) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n+(-n&3):]
	return v
}

// opaque reads variable-length opaque data of at most max bytes (max ≥ 0).
// The length is checked before anything else; the result aliases the
// request buffer, so nothing is allocated.
func (r *xdrReader) opaque(max int) []byte {
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(max) {
		r.fail()
		return nil
	}
	return r.fixed(int(n))
}

// xdrWriter encodes XDR by appending to a byte slice. A READ reply may end
// in bytes that are sent from a file instead (tail): b is then the reply
// up to them.
type xdrWriter struct {
	b    []byte
	tail *fileTail
}

func (w *xdrWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *xdrWriter) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

func (w *xdrWriter) bool(v bool) {
	if v {
		w.u32(1)
	} else {
		w.u32(0)
	}
}

// opaque appends variable-length opaque data (a string or a handle).
func (w *xdrWriter) opaque(p []byte) {
	w.u32(uint32(len(p)))
	w.b = append(w.b, p...)
	w.pad(len(p))
}

func (w *xdrWriter) string(s string) {
	w.u32(uint32(len(s)))
	w.b = append(w.b, s...)
	w.pad(len(s))
}

func (w *xdrWriter) pad(n int) {
	for ; n&3 != 0; n++ {
		w.b = append(w.b, 0)
	}
}

// opaqueLen is the encoded size of n bytes of variable-length opaque data.
func opaqueLen(n int) int { return 4 + (n+3)&^3 }

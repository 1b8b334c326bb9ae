package storeclient

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestOutboardRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int64{0, 1, 1023, 1024, BaoGroupSize - 1, BaoGroupSize, BaoGroupSize + 1, 3*BaoGroupSize + 17, 8 * BaoGroupSize} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		enc, d, err := EncodeOutboard(bytes.NewReader(data), size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if d != HashBytes(data) {
			t.Fatalf("size %d: root %s, digest %s", size, d, HashBytes(data))
		}
		if int64(len(enc)) != OutboardSize(size) {
			t.Fatalf("size %d: outboard %d bytes, OutboardSize %d", size, len(enc), OutboardSize(size))
		}
		ob, err := ParseOutboard(d, size, enc)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		// Every group span verifies; a flipped byte in it does not.
		for off := int64(0); off < size; off += BaoGroupSize / 2 {
			s, e := ob.GroupSpan(off, 100)
			if err := ob.Verify(data[s:e], s); err != nil {
				t.Fatalf("size %d: span %d-%d: %v", size, s, e, err)
			}
			bad := bytes.Clone(data[s:e])
			bad[len(bad)/2] ^= 1
			if err := ob.Verify(bad, s); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("size %d: flipped span %d-%d: %v, want ErrCorrupt", size, s, e, err)
			}
		}
		if size > 0 {
			if err := ob.Verify(data, 0); err != nil {
				t.Fatalf("size %d: whole blob: %v", size, err)
			}
		}
	}
}

func TestParseOutboardRejects(t *testing.T) {
	a := bytes.Repeat([]byte{1}, 3*BaoGroupSize)
	b := bytes.Repeat([]byte{2}, 3*BaoGroupSize)
	encA, dA, _ := EncodeOutboard(bytes.NewReader(a), int64(len(a)))
	encB, _, _ := EncodeOutboard(bytes.NewReader(b), int64(len(b)))
	if _, err := ParseOutboard(dA, int64(len(a)), encB); !errors.Is(err, ErrCorrupt) {
		t.Errorf("another blob's outboard: %v", err)
	}
	if _, err := ParseOutboard(dA, int64(len(a))+1, encA); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong size: %v", err)
	}
	if _, err := ParseOutboard(dA, int64(len(a)), encA[:len(encA)-1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short outboard: %v", err)
	}
	lying := bytes.Clone(encA)
	lying[len(lying)-1] ^= 1 // a deep node: parses, then fails in Verify
	ob, err := ParseOutboard(dA, int64(len(a)), lying)
	if err != nil {
		t.Fatalf("outboard with a wrong deep node: %v", err)
	}
	s, e := ob.GroupSpan(BaoGroupSize+1, 1) // the second group: its CV is the last node
	if err := ob.Verify(a[s:e], s); !errors.Is(err, ErrCorrupt) {
		t.Errorf("verify through a wrong node: %v", err)
	}
	if _, _, err := EncodeOutboard(bytes.NewReader(a[:10]), 20); err == nil {
		t.Errorf("EncodeOutboard of a short reader succeeded")
	}
}

package grpcbuf

import "testing"

func TestPool(t *testing.T) {
	p := New()
	for _, size := range []int{0, 1, 255, 256, 257, 4096, 1 << 20, 16 << 20, 16<<20 + 1} {
		b := p.Get(size)
		if len(*b) != size || cap(*b) < size {
			t.Fatalf("Get(%d): len %d cap %d", size, len(*b), cap(*b))
		}
		p.Put(b)
		if b2 := p.Get(size); len(*b2) != size {
			t.Fatalf("Get(%d) after Put: len %d", size, len(*b2))
		}
	}
	// A foreign buffer is not pooled.
	odd := make([]byte, 1000)
	p.Put(&odd)
	if b := p.Get(1000); cap(*b) != 1024 {
		t.Errorf("Get(1000) returned a foreign buffer of cap %d", cap(*b))
	}
}

// Package grpcbuf has the buffer pool storefs's gRPC client and server
// give grpc-go: its default pool clears every buffer it hands out, which
// for blob streams costs as much as copying the data once more, although
// grpc-go overwrites every byte of a buffer it takes before using it (it
// takes buffers of the exact length it fills).
package grpcbuf

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Pool is a mem.BufferPool of power-of-two size classes from 256 bytes to
// 16 MiB whose buffers are not cleared on Get. Larger buffers are not
// pooled. It is safe for concurrent use.
type Pool struct {
	classes [maxShift - minShift + 1]sync.Pool
}

const (
	minShift = 8
	maxShift = 24
)

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty Pool.
func New() *Pool { return &Pool{} }

// class returns the index of the smallest class holding size bytes, and
// false for sizes beyond the largest.
func class(size int) (int, bool) {
	shift := max(minShift, bits.Len(uint(max(size, 1)-1)))
	if shift > maxShift {
		return 0, false
	}
	return shift - minShift, true
}

// Get returns a buffer of length size; its bytes are whatever they were.
func (p *Pool) Get(size int) *[]byte {
	c, ok := class(size)
	if !ok {
		b := make([]byte, size)
		return &b
	}
	if v, _ := p.classes[c].Get().(*[]byte); v != nil {
		*v = (*v)[:size]
		return v
	}
	b := make([]byte, size, 1<<(c+minShift))
	return &b
}

// Put returns a buffer to the pool.
func (p *Pool) Put(b *[]byte) {
	c, ok := class(cap(*b))
	if !ok || cap(*b) != 1<<(c+minShift) {
		return // not one of ours
	}
	p.classes[c].Put(b)
}

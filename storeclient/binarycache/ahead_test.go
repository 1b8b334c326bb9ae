package binarycache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func TestReadAheadReadsAll(t *testing.T) {
	for _, size := range []int{0, 1, aheadChunk - 1, aheadChunk, 5*aheadChunk/2 + 3, (aheadChunks + 3) * aheadChunk} {
		src := make([]byte, size)
		rng := rand.New(rand.NewPCG(1, uint64(size)))
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		// A source that returns short reads, and reads of every size.
		r := newReadAhead(iotest.HalfReader(bytes.NewReader(src)))
		var got bytes.Buffer
		buf := make([]byte, 70001)
		for {
			n, err := r.Read(buf[:1+rng.IntN(len(buf))])
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
		}
		if !bytes.Equal(got.Bytes(), src) {
			t.Fatalf("size %d: read %d bytes that differ from the source", size, got.Len())
		}
		if n, err := r.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("size %d: read after EOF: %d, %v", size, n, err)
		}
		r.stopFilling()
		r.wait()
	}
}

func TestReadAheadError(t *testing.T) {
	boom := errors.New("connection reset")
	src := io.MultiReader(bytes.NewReader(make([]byte, aheadChunk+10)), iotest.ErrReader(boom))
	r := newReadAhead(src)
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, boom) || n != aheadChunk+10 {
		t.Fatalf("read %d bytes, then %v; want %d bytes, then %v", n, err, aheadChunk+10, boom)
	}
	r.stopFilling()
	r.wait()
}

// TestReadAheadStop checks that a reader that stops early does not leave
// the goroutine behind, whether it waits for a free chunk or a slow read.
func TestReadAheadStop(t *testing.T) {
	r := newReadAhead(bytes.NewReader(make([]byte, 10*aheadChunk)))
	if _, err := r.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	r.stopFilling()
	r.wait()

	pr, pw := io.Pipe()
	r = newReadAhead(pr)
	r.stopFilling()
	pw.CloseWithError(errors.New("closed")) // as closing the download does
	r.wait()
}

func TestHashAhead(t *testing.T) {
	data := make([]byte, 3*hashChunk+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	a := newHashAhead(sha256.New())
	rest := data
	for len(rest) > 0 { // writes of every size, across chunk ends
		n := min(len(rest), 1+len(rest)%70001)
		a.Write(rest[:n])
		rest = rest[n:]
	}
	want := sha256.Sum256(data)
	if got := a.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("hashAhead sum %x, want %x", got, want)
	}
	a.stop() // after Sum, stop is a no-op

	unused := newHashAhead(sha256.New())
	unused.Write(data[:10])
	unused.stop()
}

// TestReadAheadUnexpectedEOF checks that a source failing with
// io.ErrUnexpectedEOF (a download cut short, wrapped or not) is reported as that failure, not as the source's clean end.
func TestReadAheadUnexpectedEOF(t *testing.T) {
	for _, srcErr := range []error{io.ErrUnexpectedEOF, fmt.Errorf("read nar/x.nar.xz: %w", io.ErrUnexpectedEOF)} {
		src := io.MultiReader(bytes.NewReader(make([]byte, 100)), iotest.ErrReader(srcErr))
		r := newReadAhead(src)
		n, err := io.Copy(io.Discard, r)
		r.stopFilling()
		r.wait()
		if n != 100 || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("source failing with %v: read %d bytes, then %v; want 100 bytes, then the source's error", srcErr, n, err)
		}
	}
}

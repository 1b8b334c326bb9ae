package nfs

import (
	"context"
	"errors"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// readdirArgs encodes READDIR (plus false) or READDIRPLUS arguments with a
// zero verifier.
func readdirArgs(fh []byte, cookie uint64, maxcount uint32, plus bool) []byte {
	var w xdrWriter
	w.opaque(fh)
	w.u64(cookie)
	w.u64(0) // cookieverf
	if plus {
		w.u32(maxcount)
	}
	w.u32(maxcount)
	return w.b
}

// readdirWithin calls READDIR or READDIRPLUS and returns its results (the
// status first), failing the test if the answer takes more than a few
// seconds.
func readdirWithin(t *testing.T, c *testClient, fh []byte, cookie uint64, maxcount uint32, plus bool) []byte {
	t.Helper()
	proc := uint32(16)
	if plus {
		proc = 17
	}
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := c.call(progNFS, 3, proc, readdirArgs(fh, cookie, maxcount, plus))
		done <- result{body, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("READDIR(plus %v) cookie %d maxcount %d: %v", plus, cookie, maxcount, r.err)
		}
		return r.body
	case <-time.After(5 * time.Second):
		c.Close() // the server may be spinning: let the client go at least
		t.Fatalf("READDIR(plus %v) cookie %d maxcount %d: no answer within 5 s", plus, cookie, maxcount)
		return nil
	}
}

// TestReaddirSmallMaxcount sends READDIR and READDIRPLUS with every
// maxcount up to a few entries' worth, from the start, from the middle and
// past the end: each is answered, TOOSMALL or a reply within maxcount, and
// a cookie past the end is an empty listing with eof once that fits.
func TestReaddirSmallMaxcount(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{ListRoot: true})
	_, addr := serveTest(t, fsys, Options{Logger: discardLogger()})
	c := dialT(t, addr)
	dir, err := c.Handle(storetest.RootComplicated) // ".keep", "aa", "keep"
	if err != nil {
		t.Fatal(err)
	}
	for _, fh := range [][]byte{dir, c.root} {
		for _, plus := range []bool{false, true} {
			for _, cookie := range []uint64{0, 1, 2, 3, 5, 1000, math.MaxUint64 - 2, math.MaxUint64} {
				// Past the end: below the root cookies are entry indexes;
				// root cookies are name keys, the fixtures' all small.
				pastEnd := cookie >= 1000 && (&fh[0] == &dir[0] || cookie >= math.MaxUint64-2)
				for maxcount := uint32(0); maxcount <= 700; maxcount++ {
					body := readdirWithin(t, c, fh, cookie, maxcount, plus)
					r := xdrReader{b: body}
					switch st := r.u32(); st {
					case nfs3ErrTooSmall:
						if pastEnd && maxcount >= readdirOverhead {
							t.Fatalf("plus %v cookie %d maxcount %d: TOOSMALL, want an empty listing", plus, cookie, maxcount)
						}
						continue
					case nfs3OK:
					default:
						t.Fatalf("plus %v cookie %d maxcount %d: status %d", plus, cookie, maxcount, st)
					}
					if maxcount < readdirOverhead || len(body) > int(maxcount) {
						t.Fatalf("plus %v cookie %d maxcount %d: reply of %d bytes", plus, cookie, maxcount, len(body))
					}
					readPostOp(&r)
					r.u64() // verifier
					n := 0
					for r.u32() == 1 {
						n++
						r.u64()
						r.opaque(255)
						r.u64()
						if plus {
							readPostOp(&r)
							if r.u32() == 1 {
								r.opaque(maxFH)
							}
						}
					}
					eof := r.u32() == 1
					if r.err != nil || len(r.b) != 0 {
						t.Fatalf("plus %v cookie %d maxcount %d: malformed reply %x", plus, cookie, maxcount, body)
					}
					if pastEnd && (n != 0 || !eof) {
						t.Fatalf("plus %v cookie %d maxcount %d: %d entries, eof %v; want none and eof", plus, cookie, maxcount, n, eof)
					}
					if n == 0 && !eof {
						t.Fatalf("plus %v cookie %d maxcount %d: no entries and no eof", plus, cookie, maxcount)
					}
				}
			}
		}
	}
	// The server still answers normally.
	if es, err := c.ReadDir(storetest.RootComplicated, 0); err != nil || len(es) != 5 {
		t.Errorf("list after the small reads: %v, %v", es, err)
	}
}

// TestVFSReadDirNegativeCount checks the vfs side of the READDIR loop
// fix: a negative count is EINVAL, not "everything".
func TestVFSReadDirNegativeCount(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{Logger: discardLogger()})
	dir, err := fsys.Walk(context.Background(), storetest.RootComplicated, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, max := range []int{-1, -3, math.MinInt} {
		es, err := fsys.ReadDir(t.Context(), dir, 0, max)
		if !errors.Is(err, syscall.EINVAL) || es != nil {
			t.Errorf("ReadDir(max %d) = %d entries, %v; want EINVAL", max, len(es), err)
		}
	}
	es, err := fsys.ReadDir(t.Context(), dir, 0, vfs.ReadDirAll)
	if err != nil || len(es) != 3 {
		t.Errorf("ReadDir(ReadDirAll) = %d entries, %v; want 3", len(es), err)
	}
}

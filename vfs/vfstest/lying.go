package vfstest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// Lie is one way a remote store lies about a blob. The lying cases of the
// suite serve a store that tells the lie about one large blob and check
// that every read of it fails with EIO, that no wrong byte is served, and
// that the blob's failure is logged once.
type Lie string

// The lies.
const (
	LieHonestStart  Lie = "honest-start"     // a stream is honest in its first chunk group, then flips a byte in each later one
	LieSecondStream Lie = "second-stream"    // the first stream is honest, later ones flip a byte (no outboard: the blob is spooled)
	LieTruncated    Lie = "truncated"        // a stream ends at half the blob
	LieLonger       Lie = "longer"           // the store says the blob is 1000 bytes longer
	LieStatSize     Lie = "stat-size"        // Stat says the blob is 1 byte shorter; reads are honest
	LieBaoFlipped   Lie = "bao-flipped"      // a byte of a deep node of the outboard is flipped
	LieBaoOther     Lie = "bao-other-blob"   // the outboard of another blob of the same size
	LieNoBaoFlipped Lie = "no-bao-flipped"   // no outboard; every stream flips a byte in the last group
	LieBaoTooShort  Lie = "bao-wrong-length" // an outboard one node short
)

// Lies lists every lie.
func Lies() []Lie {
	return []Lie{LieHonestStart, LieSecondStream, LieTruncated, LieLonger, LieStatSize, LieBaoFlipped, LieBaoOther, LieNoBaoFlipped, LieBaoTooShort}
}

// rootBig is the root the lying stores lie about: a regular file of
// bigSize bytes, more than four chunk groups with a short last one.
const (
	rootBig = "99999999999999999999999999999999-big"
	bigSize = 4*storeclient.BaoGroupSize + 12345
)

// bigBlob returns the seeded content of rootBig.
func bigBlob() []byte {
	rng := rand.New(rand.NewPCG(26, 26))
	b := make([]byte, bigSize)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// RemoteStore returns a store that holds the fixtures and rootBig and is
// not trusted-local, as a remote store: it gives bao outboards (when
// withOutboard) and opens blobs of a known size. With lie != "" it tells
// that lie about rootBig's blob.
func RemoteStore(t *testing.T, lie Lie, withOutboard bool) storeclient.Store {
	t.Helper()
	s := fixtureStore(t, storetest.FillOptions{})
	big := bigBlob()
	if err := storetest.PutBlob(t.Context(), s, big); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(big)
	putRoot(t, s, rootBig, storeclient.FileNode(d, bigSize, false))
	enc, _, err := storeclient.EncodeOutboard(bytes.NewReader(big), bigSize)
	if err != nil {
		t.Fatal(err)
	}
	switch lie {
	case LieBaoFlipped:
		enc = bytes.Clone(enc)
		enc[len(enc)-1] ^= 1
	case LieBaoOther:
		other := bytes.Clone(big)
		other[0] ^= 1
		enc, _, _ = storeclient.EncodeOutboard(bytes.NewReader(other), bigSize)
	case LieBaoTooShort:
		enc = enc[:len(enc)-64]
	case LieSecondStream, LieNoBaoFlipped:
		withOutboard = false
	}
	return &lyingStore{Store: s, lie: lie, big: d, outboard: enc, withOutboard: withOutboard}
}

type lyingStore struct {
	storeclient.Store
	lie          Lie
	big          storeclient.Digest
	outboard     []byte
	withOutboard bool
	opens        atomic.Int32
}

func (l *lyingStore) BlobOutboard(ctx context.Context, d storeclient.Digest) ([]byte, error) {
	if !l.withOutboard {
		return nil, fmt.Errorf("blob %s: %w", d, storeclient.ErrNoOutboard)
	}
	if d == l.big {
		return l.outboard, nil
	}
	r, err := l.Store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	enc, _, err := storeclient.EncodeOutboard(io.NewSectionReader(r, 0, r.Size()), r.Size())
	return enc, err
}

func (l *lyingStore) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	n, err := l.Store.StatBlob(ctx, d)
	if d == l.big && err == nil {
		switch l.lie {
		case LieLonger:
			n += 1000
		case LieStatSize:
			n--
		}
	}
	return n, err
}

func (l *lyingStore) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	r, err := l.Store.OpenBlob(ctx, d)
	if err != nil || d != l.big {
		return r, err
	}
	return &lyingReader{BlobReader: r, lie: l.lie, first: l.opens.Add(1) == 1}, nil
}

// OpenBlobSized opens like a remote store that trusts the caller's size:
// a longer or shorter blob shows only in its reads.
func (l *lyingStore) OpenBlobSized(ctx context.Context, d storeclient.Digest, size int64) (storeclient.BlobReader, error) {
	r, err := l.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	if lr, ok := r.(*lyingReader); ok && (l.lie == LieLonger || l.lie == LieStatSize) {
		lr.size = size + 1000
		if l.lie == LieStatSize {
			lr.size = size - 1
		}
	}
	return r, nil
}

type lyingReader struct {
	storeclient.BlobReader
	lie   Lie
	first bool // the store's first stream of the blob
	size  int64
}

func (r *lyingReader) Size() int64 {
	switch {
	case r.size != 0:
		return r.size
	case r.lie == LieLonger:
		return r.BlobReader.Size() + 1000
	case r.lie == LieStatSize:
		return r.BlobReader.Size() - 1
	}
	return r.BlobReader.Size()
}

func (r *lyingReader) ReadAt(p []byte, off int64) (int, error) {
	if r.lie == LieTruncated {
		half := r.BlobReader.Size() / 2
		if off >= half {
			return 0, io.EOF
		}
		if off+int64(len(p)) > half {
			n, _ := r.BlobReader.ReadAt(p[:half-off], off)
			return n, io.EOF
		}
	}
	n, err := r.BlobReader.ReadAt(p, off)
	flip := func(at int64) {
		if at >= off && at < off+int64(n) {
			p[at-off] ^= 0x5a
		}
	}
	switch r.lie {
	case LieHonestStart:
		for g := int64(storeclient.BaoGroupSize); g < r.BlobReader.Size(); g += storeclient.BaoGroupSize {
			flip(g + 7)
		}
	case LieSecondStream:
		if !r.first && n > 0 {
			p[0] ^= 0x5a
		}
	case LieNoBaoFlipped:
		flip(bigSize - 10)
	}
	return n, err
}

// lyingCase is the check every lying case makes: reads of rootBig fail
// with EIO and serve no wrong byte, the blob's failure is logged once, and
// the honest files beside it are served.
func lyingCase(lie Lie) testCase {
	return testCase{
		name:  "32-lying-store-" + string(lie),
		store: func(t *testing.T) storeclient.Store { return RemoteStore(t, lie, true) },
		run: func(t *testing.T, e *env) {
			want := bigBlob()
			d := storeclient.HashBytes(want).String()
			got, err := e.c.ReadFile(rootBig)
			if lie == LieSecondStream {
				// The first stream is the only one the blob needs: it is
				// spooled, verified, and served right.
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("read a blob whose later streams lie: %d bytes, %v", len(got), err)
				}
				return
			}
			wantErr(t, "read a blob the store lies about", err, syscall.EIO)
			if !bytes.HasPrefix(want, got) {
				t.Errorf("%d bytes served before the error, and they are wrong", len(got))
			}
			for _, off := range []int64{0, storeclient.BaoGroupSize + 100, bigSize - 100} {
				p := make([]byte, 4096)
				n, err := e.c.ReadAt(rootBig, p, off)
				if err != nil && !errorsIsEOF(err) {
					wantErr(t, fmt.Sprintf("ReadAt %d of a blob the store lies about", off), err, syscall.EIO)
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					t.Errorf("ReadAt %d served %d wrong bytes", off, n)
				}
			}
			if b := mustRead(t, e.c, rootExec); !bytes.Equal(b, storetest.HelloWorld) {
				t.Errorf("read an honest blob of the same store = %q", b)
			}
			if n := e.logs.count(d); n != 1 {
				t.Errorf("%d log lines name %s, want 1:\n%s", n, d, e.logs.String())
			}
		},
	}
}

// remoteCases read a remote store that tells the truth, with and without
// outboards: every byte right, nothing logged.
func remoteCase(withOutboard bool) testCase {
	name := "33-remote-store-bao"
	if !withOutboard {
		name = "33-remote-store-spooled"
	}
	return testCase{
		name:  name,
		store: func(t *testing.T) storeclient.Store { return RemoteStore(t, "", withOutboard) },
		run: func(t *testing.T, e *env) {
			want := bigBlob()
			if got := mustRead(t, e.c, rootBig); !bytes.Equal(got, want) {
				t.Fatalf("read a remote blob: %d bytes, not the blob's", len(got))
			}
			rng := rand.New(rand.NewPCG(3, 3))
			for range 20 {
				off := rng.Int64N(bigSize)
				p := make([]byte, 1+rng.IntN(3*storeclient.BaoGroupSize))
				n, err := e.c.ReadAt(rootBig, p, off)
				if err != nil && !errorsIsEOF(err) {
					t.Fatalf("ReadAt %d+%d: %v", off, len(p), err)
				}
				if n != min(len(p), int(bigSize-off)) || !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					t.Fatalf("ReadAt %d+%d: %d bytes, not the blob's", off, len(p), n)
				}
			}
			if e.logs.Len() != 0 {
				t.Errorf("log lines reading an honest remote store:\n%s", e.logs.String())
			}
		},
	}
}

func errorsIsEOF(err error) bool { return err == io.EOF || strings.HasSuffix(err.Error(), "EOF") }

// logBuffer keeps the log lines of a case.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// remoteCases are the cases of remote stores: honest ones, then one per lie.
func remoteCases() []testCase {
	cs := []testCase{remoteCase(true), remoteCase(false)}
	for _, l := range Lies() {
		cs = append(cs, lyingCase(l))
	}
	return cs
}

package grpcstore_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

// Reads of a storefs server, sequential in the ReadAt sizes vfs uses and
// random, get the blob's bytes: streams limited by the length extension
// and streams that continue past their predecessor's limit agree.
func TestLengthLimitedStreams(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	rng := rand.New(rand.NewPCG(7, 7))
	blob := make([]byte, 48<<20+12345)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	if err := storetest.PutBlob(ctx, backend, blob); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(blob)
	lis := tcpListen(t)
	serve(t, lis, backend)
	s := open(t, urlOf(lis), grpcstore.Options{Timeout: 5 * time.Second})
	r, err := s.OpenBlobSized(ctx, d, int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, step := range []int{1 << 20, 128 << 10, 64 << 10} {
		p := make([]byte, step)
		for off := 0; off < len(blob); off += step {
			n, err := r.ReadAt(p, int64(off))
			if n != min(step, len(blob)-off) || !bytes.Equal(p[:n], blob[off:off+n]) {
				t.Fatalf("step %d: ReadAt %d: %d bytes, %v", step, off, n, err)
			}
		}
	}
	p := make([]byte, 4096)
	for range 200 {
		off := rng.IntN(len(blob) - len(p))
		if n, err := r.ReadAt(p, int64(off)); n != len(p) || !bytes.Equal(p, blob[off:off+len(p)]) {
			t.Fatalf("random ReadAt %d: %d bytes, %v", off, n, err)
		}
	}
}

// The URL parameters are checked: a bad one is an error naming it.
func TestOpenURLParameters(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string // "" means it opens
	}{
		{"grpc+http://127.0.0.1:1?window=4194304&timeout=5s&package=snix", ""},
		{"grpc+http://127.0.0.1:1?window=10", "window=10: want a byte count from 65536 to 67108864"},
		{"grpc+http://127.0.0.1:1?window=lots", "window=lots"},
		{"grpc+http://127.0.0.1:1?timeout=-1s", "timeout=-1s"},
		{"grpc+http://127.0.0.1:1?colour=blue", `unknown parameter "colour" (want package, timeout, window)`},
	} {
		s, err := grpcstore.Open(tc.url, grpcstore.Options{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.url, err, tc.want)
		}
		if s != nil {
			s.Close()
		}
	}
}

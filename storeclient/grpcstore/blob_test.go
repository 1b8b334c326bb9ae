package grpcstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

// fakeBlobs is a BlobService that behaves like upstream servers do
// (no offset extension; chunks listed only when configured), or badly.
type fakeBlobs struct {
	castorepb.UnimplementedBlobServiceServer
	blobs   map[storeclient.Digest][]byte
	chunks  map[storeclient.Digest][]storeclient.Digest
	bao     map[storeclient.Digest][]byte // sent when asked for
	corrupt bool                          // flip the last byte of every blob read
	stall   bool                          // send one message, then wait for the client to give up
	silent  bool                          // send nothing, and wait for the client to give up
	hang    bool                          // never answer Stat
	offsets bool                          // honour castorepb.ReadOffsetMetadata, as storefs does

	mu    sync.Mutex
	reads []storeclient.Digest
	stats []*castorepb.StatBlobRequest
}

func newFakeBlobs() *fakeBlobs {
	return &fakeBlobs{blobs: map[storeclient.Digest][]byte{}, chunks: map[storeclient.Digest][]storeclient.Digest{}, bao: map[storeclient.Digest][]byte{}}
}

func (f *fakeBlobs) add(b []byte) storeclient.Digest {
	d := storeclient.HashBytes(b)
	f.blobs[d] = b
	return d
}

func (f *fakeBlobs) Stat(ctx context.Context, req *castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	f.stats = append(f.stats, req)
	f.mu.Unlock()
	d := storeclient.Digest(req.GetDigest())
	if _, ok := f.blobs[d]; !ok {
		return nil, status.Error(codes.NotFound, "no such blob")
	}
	resp := &castorepb.StatBlobResponse{}
	if req.GetSendBao() {
		resp.Bao = f.bao[d]
	}
	for _, c := range f.chunks[d] {
		resp.Chunks = append(resp.Chunks, &castorepb.StatBlobResponse_ChunkMeta{Digest: c[:], Size: uint64(len(f.blobs[c]))})
	}
	return resp, nil
}

func (f *fakeBlobs) Read(req *castorepb.ReadBlobRequest, stream grpc.ServerStreamingServer[castorepb.BlobChunk]) error {
	d := storeclient.Digest(req.GetDigest())
	f.mu.Lock()
	f.reads = append(f.reads, d)
	f.mu.Unlock()
	b, ok := f.blobs[d]
	if !ok {
		return status.Error(codes.NotFound, "no such blob")
	}
	if f.silent {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	if f.corrupt {
		b = bytes.Clone(b)
		b[len(b)-1] ^= 1
	}
	if md, _ := metadata.FromIncomingContext(stream.Context()); f.offsets && len(md.Get(castorepb.ReadOffsetMetadata)) == 1 {
		v := md.Get(castorepb.ReadOffsetMetadata)[0]
		off, err := strconv.Atoi(v)
		if err != nil || off < 0 || off > len(b) {
			return status.Errorf(codes.OutOfRange, "offset %s", v)
		}
		if err := stream.SendHeader(metadata.Pairs(castorepb.ReadOffsetMetadata, v)); err != nil {
			return err
		}
		b = b[off:]
	}
	for len(b) > 0 {
		n := min(len(b), 10000)
		if err := stream.Send(&castorepb.BlobChunk{Data: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
		if f.stall {
			<-stream.Context().Done()
			return stream.Context().Err()
		}
	}
	return nil
}

// statCount returns how many Stat calls the server answered.
func (f *fakeBlobs) statCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stats)
}

func (f *fakeBlobs) readDigests() []storeclient.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]storeclient.Digest(nil), f.reads...)
}

func startFake(t *testing.T, f *fakeBlobs) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	castorepb.RegisterBlobServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return "grpc+http://" + lis.Addr().String() + "?package=tvix"
}

// TestChunkedBlob reads a blob that the server lists as four chunks: a
// read in the last chunk reads only that chunk.
func TestChunkedBlob(t *testing.T) {
	f := newFakeBlobs()
	data := storetest.BlobB
	whole := f.add(data)
	q := len(data) / 4
	for i := range 4 {
		f.chunks[whole] = append(f.chunks[whole], f.add(data[i*q:min((i+1)*q, len(data))]))
	}
	s := open(t, startFake(t, f), grpcstore.Options{Window: 8192})
	r, err := s.OpenBlob(t.Context(), whole)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 10)
	if n, err := r.ReadAt(buf, int64(len(data)-10)); n != 10 || err != nil || !bytes.Equal(buf, data[len(data)-10:]) {
		t.Fatalf("ReadAt(last 10 bytes) = %d, %v", n, err)
	}
	if got := f.readDigests(); len(got) != 1 || got[0] != f.chunks[whole][3] {
		t.Errorf("reading the last bytes read %v, want only the last chunk %s", got, f.chunks[whole][3])
	}
	checkBlobReads(t, s, data)
}

// TestUpstreamLikeBlob reads from a server that lists no chunks and
// ignores the offset extension: the size is measured once, reads work.
func TestUpstreamLikeBlob(t *testing.T) {
	f := newFakeBlobs()
	d := f.add(storetest.BlobB)
	s := open(t, startFake(t, f), grpcstore.Options{Window: 50000})
	n, err := s.StatBlob(t.Context(), d)
	if err != nil || n != int64(len(storetest.BlobB)) {
		t.Fatalf("StatBlob = %d, %v; want %d", n, err, len(storetest.BlobB))
	}
	checkBlobReads(t, s, storetest.BlobB)
}

// TestCorruptBlob checks that a blob streamed to its end is verified.
func TestCorruptBlob(t *testing.T) {
	f := newFakeBlobs()
	f.corrupt = true
	d := f.add(storetest.BlobB)
	f.chunks[d] = []storeclient.Digest{d}
	s := open(t, startFake(t, f), grpcstore.Options{})
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := r.ReadAt(buf, off)
		off += int64(n)
		if err != nil {
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("ReadAt(%d) = %v, want ErrCorrupt", off, err)
			}
			return
		}
		if off >= r.Size() {
			t.Fatal("read a corrupt blob to its end without an error")
		}
	}
}

// TestStalledServer checks that a server that stops answering makes calls
// fail after the timeout instead of hanging.
func TestStalledServer(t *testing.T) {
	f := newFakeBlobs()
	f.stall = true
	d := f.add(storetest.BlobB)
	f.chunks[d] = []storeclient.Digest{d}
	s := open(t, startFake(t, f), grpcstore.Options{Timeout: 300 * time.Millisecond, Attempts: 2})
	r, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 100000)
	if _, err := r.ReadAt(buf, 0); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("ReadAt from a stalled stream = %v, want DEADLINE_EXCEEDED", err)
	}

	f.hang = true
	if _, err := s.StatBlob(t.Context(), d); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("StatBlob on a hanging server = %v, want DEADLINE_EXCEEDED", err)
	}
}

// TestOutage stops the server in the middle of use: calls fail (they do
// not hang), and work again once the server is back on the same address.
func TestOutage(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := t.Context()
			backend := memory.New()
			if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
				t.Fatal(err)
			}
			lis := tr.listen(t)
			addr := lis.Addr()
			srv := serve(t, lis, backend)
			s := open(t, urlOf(lis), grpcstore.Options{Timeout: 2 * time.Second, Attempts: 2, Window: 4096})
			bd := storeclient.HashBytes(storetest.BlobB)
			r, err := s.OpenBlob(ctx, bd)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, 4096)
			// Windows 0 and 2 are read (and cached); the stream is past
			// window 1, so reading it later needs a new stream.
			for _, off := range []int64{0, 8192} {
				if _, err := r.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
			}

			srv.stop(t)
			if _, err := s.StatBlob(ctx, bd); status.Code(err) != codes.Unavailable {
				t.Errorf("StatBlob during the outage = %v, want UNAVAILABLE", err)
			}
			if _, err := s.GetDirectory(ctx, storeclient.EmptyDigest); err == nil {
				t.Error("GetDirectory during the outage succeeded")
			}
			if _, err := r.ReadAt(buf, 4096); err == nil {
				t.Error("ReadAt of an uncached window behind the stream during the outage succeeded")
			}

			var lis2 net.Listener
			if addr.Network() == "unix" {
				lis2, err = grpcserver.Listen("unix:"+addr.String(), nil, quietLogger())
			} else {
				lis2, err = grpcserver.Listen(addr.String(), nil, quietLogger())
			}
			if err != nil {
				t.Skipf("cannot listen on %s again: %v", addr, err)
			}
			serve(t, lis2, backend)
			// Recovery: retry until the client has reconnected (its
			// reconnect backoff is at most a few seconds).
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, err := s.StatBlob(ctx, bd)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no recovery after the server came back: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if n, err := r.ReadAt(buf, 500000); n != len(buf) || err != nil || !bytes.Equal(buf, storetest.BlobB[500000:500000+len(buf)]) {
				t.Errorf("ReadAt after recovery = %d, %v", n, err)
			}
		})
	}
}

// TestReadAfterClose checks that a closed reader says so.
func TestReadAfterClose(t *testing.T) {
	f := newFakeBlobs()
	d := f.add(storetest.BlobB)
	s := open(t, startFake(t, f), grpcstore.Options{})
	for range 20 {
		r, err := s.OpenBlobSized(t.Context(), d, int64(len(storetest.BlobB)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "after close") {
			t.Fatalf("ReadAt after Close = %v, want a read after close", err)
		}
	}
}

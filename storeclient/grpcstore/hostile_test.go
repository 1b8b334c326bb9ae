package grpcstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcstore"
)

// liar is a BlobService that lies as each test case tells it to. Its blobs
// are the hostile test's blob and its three chunks.
type liar struct {
	castorepb.UnimplementedBlobServiceServer
	blobs map[storeclient.Digest][]byte
	// stat answers Stat for the blob; nil: no chunks.
	stat func(req *castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error)
	// send streams b, the bytes of the digest asked for (nil if
	// unknown), from offset off (-1 if not asked); nil: honestly, from
	// the start, in 64 KiB messages.
	send func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], d storeclient.Digest, b []byte, off int64) error
}

func (l *liar) Stat(_ context.Context, req *castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
	if _, ok := l.blobs[storeclient.Digest(req.GetDigest())]; !ok {
		return nil, status.Error(codes.NotFound, "no such blob")
	}
	if l.stat == nil {
		return &castorepb.StatBlobResponse{}, nil
	}
	return l.stat(req)
}

func (l *liar) Read(req *castorepb.ReadBlobRequest, stream grpc.ServerStreamingServer[castorepb.BlobChunk]) error {
	d := storeclient.Digest(req.GetDigest())
	b := l.blobs[d]
	off := int64(-1)
	if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get(castorepb.ReadOffsetMetadata)) == 1 {
		off = 0 // asked; a liar may act on it
	}
	if l.send != nil {
		return l.send(stream, d, b, off)
	}
	if b == nil {
		return status.Error(codes.NotFound, "no such blob")
	}
	return sendAll(stream, b)
}

// sendAll streams b in 64 KiB messages.
func sendAll(stream grpc.ServerStreamingServer[castorepb.BlobChunk], b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		if err := stream.Send(&castorepb.BlobChunk{Data: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func chunkMeta(d storeclient.Digest, size uint64) *castorepb.StatBlobResponse_ChunkMeta {
	return &castorepb.StatBlobResponse_ChunkMeta{Digest: d[:], Size: size}
}

// outcome is what reading a blob from a liar may give.
type outcome int

const (
	// corrupt: an error wrapping ErrCorrupt (the client saw the lie).
	corrupt outcome = 1 << iota
	// failed: any other error.
	failed
	// rejectable: bytes that are not the blob's, which vfs's
	// verification rejects (they do not hash to the digest).
	rejectable
	// right: the blob's bytes (the lie did not matter).
	right
)

// TestHostileServer reads a blob from servers that lie in Stat and Read,
// as vfs does: with OpenBlob, and with BlobOutboard then OpenBlobSized.
// Each read ends in an error (ErrCorrupt where the client can tell) or in
// bytes vfs rejects; none panics, hangs or allocates by what the server
// claims.
func TestHostileServer(t *testing.T) {
	const mib = 1 << 20
	data := make([]byte, 3*mib+12345)
	rand.Read(data)
	d := storeclient.HashBytes(data)
	parts := [][]byte{data[:mib], data[mib : 2*mib], data[2*mib:]}
	var cd [3]storeclient.Digest
	for i, p := range parts {
		cd[i] = storeclient.HashBytes(p)
	}
	other := make([]byte, mib)
	rand.Read(other)
	otherDigest := storeclient.HashBytes(other)
	chunks := func(metas ...*castorepb.StatBlobResponse_ChunkMeta) func(*castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
		return func(*castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
			return &castorepb.StatBlobResponse{Chunks: metas}, nil
		}
	}
	manyChunks := make([]*castorepb.StatBlobResponse_ChunkMeta, 100000)
	for i := range manyChunks {
		manyChunks[i] = chunkMeta(otherDigest, 1<<40)
	}
	stalled := func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, _ int64) error {
		if err := stream.Send(&castorepb.BlobChunk{Data: b[:1000]}); err != nil {
			return err
		}
		<-stream.Context().Done()
		return stream.Context().Err()
	}

	for _, tc := range []struct {
		name string
		stat func(*castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error)
		send func(grpc.ServerStreamingServer[castorepb.BlobChunk], storeclient.Digest, []byte, int64) error
		// want is the outcomes allowed with OpenBlob, and with
		// BlobOutboard and OpenBlobSized.
		want, wantSized outcome
	}{
		{name: "honest, no chunks", want: right, wantSized: right},
		{name: "honest chunks", stat: chunks(chunkMeta(cd[0], mib), chunkMeta(cd[1], mib), chunkMeta(cd[2], uint64(len(parts[2])))), want: right, wantSized: right},
		{
			name: "chunks out of order",
			stat: chunks(chunkMeta(cd[2], uint64(len(parts[2]))), chunkMeta(cd[0], mib), chunkMeta(cd[1], mib)),
			// Each chunk is right; only the whole shows the lie.
			want: rejectable, wantSized: rejectable,
		},
		{
			name: "a chunk's digest lies",
			stat: chunks(chunkMeta(cd[0], mib), chunkMeta(otherDigest, mib), chunkMeta(cd[2], uint64(len(parts[2])))),
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], dd storeclient.Digest, b []byte, _ int64) error {
				if dd == otherDigest {
					b = parts[1]
				}
				return sendAll(stream, b)
			},
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "chunk sizes sum short",
			stat: chunks(chunkMeta(cd[0], mib), chunkMeta(cd[1], mib-1), chunkMeta(cd[2], uint64(len(parts[2])))),
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "chunk sizes sum long",
			stat: chunks(chunkMeta(cd[0], mib), chunkMeta(cd[1], mib+1), chunkMeta(cd[2], uint64(len(parts[2])))),
			want: corrupt, wantSized: corrupt,
		},
		{name: "the blob as its chunk, too long", stat: chunks(chunkMeta(d, uint64(len(data))+1)), want: corrupt, wantSized: corrupt},
		{name: "the blob as its chunk, huge", stat: chunks(chunkMeta(d, 1<<62)), want: corrupt, wantSized: corrupt},
		{name: "chunk sizes overflow", stat: chunks(chunkMeta(cd[0], 1<<63-1), chunkMeta(cd[1], 1<<63-1)), want: corrupt, wantSized: corrupt},
		{name: "a hundred thousand huge chunks", stat: chunks(manyChunks...), want: corrupt, wantSized: corrupt},
		{name: "a chunk of another size", stat: chunks(chunkMeta(cd[0], mib)), want: corrupt, wantSized: corrupt},
		{
			name: "stream longer",
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, _ int64) error {
				return sendAll(stream, append(bytes.Clone(b), 0))
			},
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "stream shorter",
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, _ int64) error {
				return sendAll(stream, b[:len(b)-1])
			},
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "stream with a flipped byte",
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, _ int64) error {
				b = bytes.Clone(b)
				b[len(b)/2] ^= 1
				return sendAll(stream, b)
			},
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "offset echoed, stream from the start",
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, off int64) error {
				if off >= 0 {
					md, _ := metadata.FromIncomingContext(stream.Context())
					if err := stream.SendHeader(metadata.Pairs(castorepb.ReadOffsetMetadata, md.Get(castorepb.ReadOffsetMetadata)[0])); err != nil {
						return err
					}
				}
				return sendAll(stream, b)
			},
			want: corrupt, wantSized: corrupt,
		},
		{
			name: "one message of 5 MiB",
			send: func(stream grpc.ServerStreamingServer[castorepb.BlobChunk], _ storeclient.Digest, b []byte, _ int64) error {
				return stream.Send(&castorepb.BlobChunk{Data: append(bytes.Clone(b), make([]byte, 5*mib-len(b))...)})
			},
			want: failed, wantSized: failed,
		},
		{name: "stalls", send: stalled, want: failed, wantSized: failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &liar{blobs: map[storeclient.Digest][]byte{d: data, cd[0]: parts[0], cd[1]: parts[1], cd[2]: parts[2], otherDigest: other}, stat: tc.stat, send: tc.send}
			url := startLiar(t, l)
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			for _, sized := range []bool{false, true} {
				// A new client each time: nothing learned before.
				// Long enough for a slow (race-instrumented, loaded) decode
				// of the largest lie; the stall waits for all of it.
				timeout := 10 * time.Second
				if tc.name == "stalls" {
					timeout = time.Second
				}
				s := open(t, url, grpcstore.Options{Timeout: timeout})
				got, err := readHostile(t, s, d, int64(len(data)), sized)
				var o outcome
				switch {
				case errors.Is(err, storeclient.ErrCorrupt):
					o = corrupt
				case err != nil:
					o = failed
				case bytes.Equal(got, data):
					o = right
				case storeclient.HashBytes(got) != d:
					o = rejectable
				}
				want := tc.want
				if sized {
					want = tc.wantSized
				}
				if o&want == 0 {
					t.Errorf("sized %v: outcome %d (%d bytes, err %v), want %d", sized, o, len(got), err, want)
				}
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > 256<<20 {
				t.Errorf("the case allocated %d MiB (server and client)", n>>20)
			}
		})
	}
}

// readHostile reads blob d as vfs does, in 64 KiB ranges: the last one
// first (a read at an offset), then all from the start, never past the
// size it was told plus a little. With sized, it asks for the outboard
// first (as vfs does; it learns the chunks) and opens with size.
func readHostile(t *testing.T, s *grpcstore.Store, d storeclient.Digest, size int64, sized bool) ([]byte, error) {
	t.Helper()
	ctx := t.Context()
	var r storeclient.BlobReader
	var err error
	if sized {
		if _, err := s.BlobOutboard(ctx, d); err != nil && !errors.Is(err, storeclient.ErrNoOutboard) {
			return nil, err
		}
		r, err = s.OpenBlobSized(ctx, d, size)
	} else {
		r, err = s.OpenBlob(ctx, d)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	limit := min(r.Size(), size+1<<16)
	buf := make([]byte, 64<<10)
	if _, err := r.ReadAt(buf, limit-int64(len(buf))); err != nil && err != io.EOF {
		return nil, err
	}
	var got []byte
	for off := int64(0); off < limit; off += int64(len(buf)) {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), limit-off)], off)
		got = append(got, buf[:n]...)
		if err != nil && err != io.EOF {
			return got, err
		}
	}
	return got, nil
}

func startLiar(t *testing.T, l *liar) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	castorepb.RegisterBlobServiceServer(srv, l)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return "grpc+http://" + lis.Addr().String() + "?package=tvix"
}

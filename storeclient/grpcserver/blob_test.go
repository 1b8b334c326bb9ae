package grpcserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

// startWith serves store with opts on a loopback listener until the test
// ends and returns a client connection to it.
func startWith(t *testing.T, store storeclient.Store, opts grpcserver.Options) *grpc.ClientConn {
	t.Helper()
	lis, err := grpcserver.Listen("", nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.Logger = quietLogger()
	go func() { done <- grpcserver.Serve(ctx, lis, store, opts) }()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

// blobData returns n bytes that differ in every chunk group.
func blobData(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) | 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// plainStore hides every capability of the store it wraps: a store that
// offers no outboard.
type plainStore struct{ storeclient.Store }

// lyingStore serves other bytes, of the same length, for blob d.
type lyingStore struct {
	storeclient.Store
	d     storeclient.Digest
	other []byte
}

type bytesBlob struct{ *bytes.Reader }

func (bytesBlob) Close() error { return nil }

func (l lyingStore) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	if d == l.d {
		return bytesBlob{bytes.NewReader(l.other)}, nil
	}
	return l.Store.OpenBlob(ctx, d)
}

// badOutboardStore offers an outboard that is not the blob's.
type badOutboardStore struct{ storeclient.Store }

func (badOutboardStore) BlobOutboard(ctx context.Context, d storeclient.Digest) ([]byte, error) {
	return []byte("not an outboard"), nil
}

// hugeStore says its blob d has 1 TiB, too large for an outboard.
type hugeStore struct {
	storeclient.Store
	d storeclient.Digest
}

func (h hugeStore) StatBlob(ctx context.Context, d storeclient.Digest) (int64, error) {
	if d == h.d {
		return 1 << 40, nil
	}
	return h.Store.StatBlob(ctx, d)
}

func (h hugeStore) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	panic("a blob too large for an outboard was opened")
}

// checkBao checks that bao is an outboard of d that storeclient accepts
// and that verifies every chunk group of data.
func checkBao(t *testing.T, d storeclient.Digest, data, bao []byte) {
	t.Helper()
	o, err := storeclient.ParseOutboard(d, int64(len(data)), bao)
	if err != nil {
		t.Fatalf("ParseOutboard: %v", err)
	}
	for off := int64(0); off < int64(len(data)); off += storeclient.BaoGroupSize {
		start, end := o.GroupSpan(off, 1)
		if err := o.Verify(data[start:end], start); err != nil {
			t.Fatalf("Verify at %d: %v", start, err)
		}
	}
}

// TestStatSendsBao: Stat with send_bao returns the blob's outboard, from a
// store that keeps outboards, one that computes them and one that offers
// none; chunks are still listed.
func TestStatSendsBao(t *testing.T) {
	sizes := []int{0, 5, storeclient.BaoGroupSize, storeclient.BaoGroupSize + 1, 1<<20 + 3, 3 << 20}
	stores := map[string]func(t *testing.T) storeclient.Store{
		"memory": func(t *testing.T) storeclient.Store { return memory.New() },
		"without the capability": func(t *testing.T) storeclient.Store {
			return plainStore{memory.New()}
		},
		"local": func(t *testing.T) storeclient.Store {
			s, err := local.Open(t.Context(), filepath.Join(t.TempDir(), "store"), local.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			store := open(t)
			if _, ok := store.(storeclient.OutboardStore); ok == (name == "without the capability") {
				t.Fatalf("store %T: OutboardStore %v", store, ok)
			}
			var blobs [][]byte
			for i, n := range sizes {
				b := blobData(n, byte(i))
				if err := storetest.PutBlob(ctx, store, b); err != nil {
					t.Fatal(err)
				}
				blobs = append(blobs, b)
			}
			client := castorepb.NewBlobServiceClient(startWith(t, store, grpcserver.Options{}))
			for _, b := range blobs {
				d := storeclient.HashBytes(b)
				resp, err := client.Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendBao: true, SendChunks: true})
				if err != nil {
					t.Fatalf("Stat of %d bytes: %v", len(b), err)
				}
				checkBao(t, d, b, resp.GetBao())
				if c := resp.GetChunks(); len(c) != 1 || c[0].GetSize() != uint64(len(b)) || !bytes.Equal(c[0].GetDigest(), d[:]) {
					t.Errorf("chunks = %v, want the blob as one chunk", c)
				}
			}
		})
	}
}

// TestStatBaoRefusesWrongBytes: a store whose bytes for a digest are not
// the blob's gets DATA_LOSS, not an outboard of the wrong bytes; a store
// whose own outboard is wrong gets it computed from the blob instead.
func TestStatBaoRefusesWrongBytes(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	data := blobData(3*storeclient.BaoGroupSize+17, 1)
	if err := storetest.PutBlob(ctx, backend, data); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(data)
	for _, tc := range []struct {
		name  string
		store storeclient.Store
		code  codes.Code
	}{
		{"other bytes", lyingStore{Store: backend, d: d, other: blobData(len(data), 2)}, codes.DataLoss},
		{"fewer bytes", lyingStore{Store: backend, d: d, other: data[:len(data)-1]}, codes.DataLoss},
		{"wrong outboard", badOutboardStore{backend}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := castorepb.NewBlobServiceClient(startWith(t, tc.store, grpcserver.Options{}))
			resp, err := client.Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendBao: true})
			if status.Code(err) != tc.code {
				t.Fatalf("Stat = %v, want %v", err, tc.code)
			}
			if err == nil {
				checkBao(t, d, data, resp.GetBao())
			}
		})
	}
}

// TestStatBaoTooLarge: a blob whose outboard would pass
// storeclient.MaxOutboardSize is statted without one.
func TestStatBaoTooLarge(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.PutBlob(ctx, backend, storetest.HelloWorld); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(storetest.HelloWorld)
	client := castorepb.NewBlobServiceClient(startWith(t, hugeStore{backend, d}, grpcserver.Options{}))
	resp, err := client.Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendBao: true, SendChunks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetBao()) != 0 || len(resp.GetChunks()) != 1 || resp.GetChunks()[0].GetSize() != 1<<40 {
		t.Errorf("Stat = %d bytes of bao, chunks %v; want no bao and one chunk of 1 TiB", len(resp.GetBao()), resp.GetChunks())
	}
}

// TestStatWithoutBaoInterop: a tvix/snix client, which does not ask for
// an outboard, gets none (under both package names) and reads the blob as
// before.
func TestStatWithoutBaoInterop(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	data := blobData(2<<20+5, 3)
	if err := storetest.PutBlob(ctx, backend, data); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(data)
	conn := startWith(t, backend, grpcserver.Options{})
	for _, pkg := range []string{"tvix", "snix"} {
		var stat castorepb.StatBlobResponse
		if err := conn.Invoke(ctx, "/"+pkg+".castore.v1.BlobService/Stat", &castorepb.StatBlobRequest{Digest: d[:], SendChunks: true}, &stat); err != nil {
			t.Fatalf("%s Stat: %v", pkg, err)
		}
		if len(stat.GetBao()) != 0 || len(stat.GetChunks()) != 1 {
			t.Errorf("%s Stat = %d bytes of bao, %d chunks; want none and one", pkg, len(stat.GetBao()), len(stat.GetChunks()))
		}
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+pkg+".castore.v1.BlobService/Read")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(&castorepb.ReadBlobRequest{Digest: d[:]}); err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		var got []byte
		for {
			var c castorepb.BlobChunk
			if err := stream.RecvMsg(&c); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s Read: %v", pkg, err)
			}
			got = append(got, c.GetData()...)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s Read returned %d bytes that differ from the blob's %d", pkg, len(got), len(data))
		}
	}
}

// readAll reads blob d through Read from off and returns the bytes.
func readAll(ctx context.Context, client castorepb.BlobServiceClient, d storeclient.Digest, off int64) ([]byte, error) {
	if off > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, castorepb.ReadOffsetMetadata, fmt.Sprint(off))
	}
	stream, err := client.Read(ctx, &castorepb.ReadBlobRequest{Digest: d[:]})
	if err != nil {
		return nil, err
	}
	var got []byte
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return nil, err
		}
		got = append(got, c.GetData()...)
	}
}

// TestBlobBytesSent: the server counts the blob bytes that Read sends,
// in its own Stats or in one given with WithStats; Stat's outboards are
// not counted.
func TestBlobBytesSent(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	data := blobData(1<<20+7, 4)
	if err := storetest.PutBlob(ctx, backend, data); err != nil {
		t.Fatal(err)
	}
	d := storeclient.HashBytes(data)
	var st grpcserver.Stats
	client := castorepb.NewBlobServiceClient(startWith(t, backend, grpcserver.Options{ServerOptions: []grpc.ServerOption{grpcserver.WithStats(&st)}}))
	if _, err := client.Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendBao: true}); err != nil {
		t.Fatal(err)
	}
	if n := st.BlobBytesSent(); n != 0 {
		t.Errorf("%d blob bytes counted after a Stat, want 0", n)
	}
	want := int64(0)
	for _, off := range []int64{0, 0, 12345} {
		got, err := readAll(ctx, client, d, off)
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("Read from %d: %d bytes, %v", off, len(got), err)
		}
		want += int64(len(data)) - off
		if n := st.BlobBytesSent(); n != want {
			t.Errorf("after reading from %d: %d blob bytes counted, want %d", off, n, want)
		}
	}

	srv := grpcserver.NewServer(backend, grpcserver.Options{Logger: quietLogger()})
	defer srv.Stop()
	if srv.Stats() == nil || srv.Stats() == &st || srv.Stats().BlobBytesSent() != 0 {
		t.Errorf("a server without WithStats counts in %p (%d), want a Stats of its own", srv.Stats(), srv.Stats().BlobBytesSent())
	}
	with := grpcserver.NewServer(backend, grpcserver.Options{Logger: quietLogger(), ServerOptions: []grpc.ServerOption{grpcserver.WithStats(&st)}})
	defer with.Stop()
	if with.Stats() != &st {
		t.Error("a server given WithStats does not count in it")
	}
}

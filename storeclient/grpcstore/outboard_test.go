package grpcstore_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

var _ storeclient.OutboardStore = (*grpcstore.Store)(nil)

// outboardOf returns the outboard of b.
func outboardOf(t *testing.T, b []byte) []byte {
	t.Helper()
	ob, _, err := storeclient.EncodeOutboard(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

// verifyWhole checks all of b, group by group, as vfs does, against the
// outboard ob of blob d.
func verifyWhole(d storeclient.Digest, b, ob []byte) error {
	o, err := storeclient.ParseOutboard(d, int64(len(b)), ob)
	if err != nil {
		return err
	}
	for off := 0; off < len(b); off += storeclient.BaoGroupSize {
		if err := o.Verify(b[off:min(len(b), off+storeclient.BaoGroupSize)], int64(off)); err != nil {
			return err
		}
	}
	return nil
}

// TestBlobOutboard checks what BlobOutboard passes on: the server's bytes,
// unchanged (vfs checks them), up to MaxOutboardSize.
func TestBlobOutboard(t *testing.T) {
	f := newFakeBlobs()
	d := f.add(storetest.BlobB)
	good := outboardOf(t, storetest.BlobB)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	other := make([]byte, 300<<10)
	rand.Read(other)
	for _, tc := range []struct {
		name    string
		bao     []byte
		wantErr error // nil: the bytes come back unchanged
	}{
		{"right", good, nil},
		{"flipped byte", flipped, nil},
		{"another blob's", outboardOf(t, other), nil},
		{"garbage", []byte("not an outboard"), nil},
		{"none", nil, storeclient.ErrNoOutboard},
		{"larger than MaxOutboardSize", make([]byte, storeclient.MaxOutboardSize+1), storeclient.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.bao[d] = tc.bao
			s := open(t, startFake(t, f), grpcstore.Options{})
			got, err := s.BlobOutboard(t.Context(), d)
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("BlobOutboard = %d bytes, %v; want an error wrapping %v", len(got), err, tc.wantErr)
			case tc.wantErr == nil && (err != nil || !bytes.Equal(got, tc.bao)):
				t.Fatalf("BlobOutboard = %d bytes, %v; want the server's %d bytes unchanged", len(got), err, len(tc.bao))
			}
			if tc.wantErr == nil {
				// vfs accepts the right one and rejects the others.
				if err := verifyWhole(d, storetest.BlobB, got); (err == nil) != (tc.name == "right") {
					t.Errorf("verifying BLOB_B with the %s outboard: %v", tc.name, err)
				}
			}
		})
	}
	// A Stat answer over the message limit is refused before it is
	// received whole.
	f.bao[d] = make([]byte, storeclient.MaxOutboardSize+32<<20)
	s := open(t, startFake(t, f), grpcstore.Options{})
	if got, err := s.BlobOutboard(t.Context(), d); err == nil {
		t.Errorf("BlobOutboard passed on an outboard of %d bytes", len(got))
	}

	// The Stat asked for the outboard and the chunks.
	f.mu.Lock()
	last := f.stats[len(f.stats)-1]
	f.mu.Unlock()
	if !last.GetSendBao() || !last.GetSendChunks() {
		t.Errorf("BlobOutboard sent %v, want send_bao and send_chunks", last)
	}

	absent := storeclient.HashBytes([]byte("absent"))
	if _, err := s.BlobOutboard(t.Context(), absent); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("BlobOutboard of an absent blob = %v, want ErrNotFound", err)
	}
}

// TestBlobOutboardTeaches checks that the Stat of BlobOutboard is the only
// one: its chunk list opens the blob later, and a blob without an
// outboard is not asked about again soon.
func TestBlobOutboardTeaches(t *testing.T) {
	f := newFakeBlobs()
	d := f.add(storetest.BlobB)
	f.chunks[d] = []storeclient.Digest{d}
	s := open(t, startFake(t, f), grpcstore.Options{})
	ctx := t.Context()
	for range 3 {
		if _, err := s.BlobOutboard(ctx, d); !errors.Is(err, storeclient.ErrNoOutboard) {
			t.Fatalf("BlobOutboard = %v, want ErrNoOutboard", err)
		}
	}
	r, err := s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != int64(len(storetest.BlobB)) {
		t.Errorf("Size = %d, want %d", r.Size(), len(storetest.BlobB))
	}
	if n := f.statCount(); n != 1 {
		t.Errorf("3 BlobOutboard and an OpenBlob made %d Stat calls, want 1", n)
	}
	// StatBlob still asks: its answer says whether the blob exists.
	if _, err := s.StatBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n := f.statCount(); n != 2 {
		t.Errorf("StatBlob made %d Stat calls in all, want 2", n)
	}
}

// TestStorefsServerOutboard runs the client against storefs's own server:
// BlobOutboard gives ErrNoOutboard or an outboard that checks, and a
// client that does not ask for one gets none and reads as before.
func TestStorefsServerOutboard(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	lis := tcpListen(t)
	serve(t, lis, backend)
	s := open(t, urlOf(lis), grpcstore.Options{})
	d := storeclient.HashBytes(storetest.BlobB)
	ob, err := s.BlobOutboard(ctx, d)
	if err != nil && !errors.Is(err, storeclient.ErrNoOutboard) {
		t.Fatalf("BlobOutboard from a storefs server: %v", err)
	}
	if err == nil {
		if err := verifyWhole(d, storetest.BlobB, ob); err != nil {
			t.Errorf("the storefs server's outboard does not check: %v", err)
		}
	}

	// A client that asks for no outboard, as upstream ones do.
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stat, err := castorepb.NewBlobServiceClient(conn).Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendChunks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(stat.GetBao()) != 0 {
		t.Errorf("Stat without send_bao sent an outboard of %d bytes", len(stat.GetBao()))
	}
	var size uint64
	for _, c := range stat.GetChunks() {
		size += c.GetSize()
	}
	if size != uint64(len(storetest.BlobB)) {
		t.Errorf("Stat chunks sum to %d, want %d", size, len(storetest.BlobB))
	}
	stream, err := castorepb.NewBlobServiceClient(conn).Read(ctx, &castorepb.ReadBlobRequest{Digest: d[:]})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		got = append(got, c.GetData()...)
	}
	if !bytes.Equal(got, storetest.BlobB) {
		t.Errorf("Read without the extension gave %d bytes, want BLOB_B's %d", len(got), len(storetest.BlobB))
	}
	checkBlobReads(t, s, storetest.BlobB)
}

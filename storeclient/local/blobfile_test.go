package local

import (
	"errors"
	"io"
	"testing"

	"github.com/storefs/storefs/storeclient"
)

func TestBlobFile(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("passthrough bytes")
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.BlobFile(ctx, d)
	if err != nil {
		t.Fatalf("BlobFile: %v", err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != string(want) {
		t.Errorf("BlobFile content = %q, %v; want %q", got, err, want)
	}
	if _, err := s.BlobFile(ctx, storeclient.HashBytes([]byte("absent"))); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("BlobFile of a missing blob: %v, want ErrNotFound", err)
	}
	s.Close()
	if _, err := s.BlobFile(ctx, d); err == nil {
		t.Error("BlobFile after Close succeeded")
	}
}

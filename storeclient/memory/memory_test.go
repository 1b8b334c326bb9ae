package memory_test

import (
	"errors"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

func TestConformance(t *testing.T) {
	storetest.TestStore(t, func(t *testing.T) storeclient.Store { return memory.New() })
}

func TestBlobOutboard(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	for _, size := range []int{0, 5, storeclient.BaoGroupSize, 3*storeclient.BaoGroupSize + 7} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 31 / 7)
		}
		if err := storetest.PutBlob(ctx, s, data); err != nil {
			t.Fatal(err)
		}
		d := storeclient.HashBytes(data)
		enc, err := storeclient.BlobOutboard(ctx, s, d)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		o, err := storeclient.ParseOutboard(d, int64(size), enc)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		for off := int64(0); off < int64(size); off += storeclient.BaoGroupSize {
			start, end := o.GroupSpan(off, 1)
			if err := o.Verify(data[start:end], start); err != nil {
				t.Errorf("size %d: %v", size, err)
			}
		}
	}
	if _, err := s.BlobOutboard(ctx, storeclient.HashBytes([]byte("absent"))); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("outboard of an absent blob: %v, want ErrNotFound", err)
	}
}

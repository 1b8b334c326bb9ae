package storeclient_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

// FuzzUnmarshalDirectory feeds arbitrary bytes to UnmarshalDirectory: it
// must never panic, must reject with a *ValidationError, and a Directory it
// accepts must re-encode canonically: the encoding decodes again to the
// same digest and is a fixed point of decode+encode.
func FuzzUnmarshalDirectory(f *testing.F) {
	fx := storetest.NewFixtures()
	for _, d := range []*storeclient.Directory{fx.DirectoryA, fx.DirectoryB, fx.DirectoryC, fx.DirectoryD, fx.DirectoryWithKeep, fx.DirectoryComplicated} {
		f.Add(d.Marshal())
	}
	// Non-canonical but valid: an explicit default (size 0) and an unknown
	// field.
	f.Add([]byte{0x12, 0x29, 0x0a, 0x01, 'a', 0x12, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 0x18, 0x00, 0x78, 0x01})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := storeclient.UnmarshalDirectory(b)
		if err != nil {
			var ve *storeclient.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("rejected with %v, not a *ValidationError", err)
			}
			return
		}
		enc := d.Marshal()
		d2, err := storeclient.UnmarshalDirectory(enc)
		if err != nil {
			t.Fatalf("canonical encoding %x of an accepted Directory is rejected: %v", enc, err)
		}
		if d2.Digest() != d.Digest() || d2.Digest() != storeclient.HashBytes(enc) {
			t.Fatalf("re-decoded Directory has digest %s, want %s", d2.Digest(), d.Digest())
		}
		if !bytes.Equal(d2.Marshal(), enc) {
			t.Fatalf("canonical encoding is not a fixed point: %x then %x", enc, d2.Marshal())
		}
		if d2.Size() != d.Size() || d2.Len() != d.Len() {
			t.Fatalf("re-decoded Directory has size %d and %d entries, want %d and %d", d2.Size(), d2.Len(), d.Size(), d.Len())
		}
		// A canonical input is its own encoding.
		if bytes.Equal(b, enc) && storeclient.HashBytes(b) != d.Digest() {
			t.Fatal("digest of a canonical input is not the hash of its bytes")
		}
	})
}

// FuzzUnmarshalPathInfo feeds arbitrary bytes to UnmarshalPathInfo: it must
// never panic, and a PathInfo it accepts must survive Marshal and
// UnmarshalPathInfo unchanged.
func FuzzUnmarshalPathInfo(f *testing.F) {
	fx := storetest.NewFixtures()
	for name, n := range fx.RootNodes() {
		p, err := storetest.PathInfoFor(name, n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.Marshal())
		ref := p.StorePath
		p.References = []storeclient.StorePath{ref}
		p.NarSize = 120
		p.Signatures = []storeclient.Signature{{Name: "cache.example-1", Data: []byte{1, 2, 3}}}
		p.Deriver = &ref
		p.CA = &storeclient.ContentAddress{Type: 1, Digest: []byte{4, 5}}
		f.Add(p.Marshal())
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := storeclient.UnmarshalPathInfo(b)
		if err != nil {
			var ve *storeclient.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("rejected with %v, not a *ValidationError", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted PathInfo does not validate: %v", err)
		}
		enc := p.Marshal()
		p2, err := storeclient.UnmarshalPathInfo(enc)
		if err != nil {
			t.Fatalf("encoding %x of an accepted PathInfo is rejected: %v", enc, err)
		}
		if !bytes.Equal(p2.Marshal(), enc) {
			t.Fatalf("PathInfo changed through Marshal and UnmarshalPathInfo: %x then %x", enc, p2.Marshal())
		}
		if p2.StorePath != p.StorePath || p2.Node != p.Node {
			t.Fatalf("PathInfo changed: %v %v, want %v %v", p2.StorePath, p2.Node, p.StorePath, p.Node)
		}
	})
}

// FuzzOutboard gives ParseOutboard and Verify an arbitrary outboard for a
// real blob: they must never panic, an accepted outboard must not verify
// bytes that are not the blob's, and the blob's own outboard verifies it.
func FuzzOutboard(f *testing.F) {
	blob := bytes.Repeat([]byte("storefs outboard fuzz "), 3*storeclient.BaoGroupSize/22+7)
	enc, _, _ := storeclient.EncodeOutboard(bytes.NewReader(blob), int64(len(blob)))
	f.Add(enc, int64(len(blob)), int64(0))
	f.Add(enc[:8], int64(len(blob)), int64(storeclient.BaoGroupSize))
	f.Add([]byte{}, int64(0), int64(0))
	f.Fuzz(func(t *testing.T, enc []byte, size, off int64) {
		size = min(max(size, 0), int64(len(blob)))
		b := blob[:size]
		d := storeclient.HashBytes(b)
		ob, err := storeclient.ParseOutboard(d, size, enc)
		if err != nil {
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("ParseOutboard: %v, want ErrCorrupt", err)
			}
			return
		}
		if size == 0 {
			return
		}
		s, e := ob.GroupSpan(min(max(off, 0), size-1), 1)
		_ = ob.Verify(b[s:e], s) // the honest bytes may fail a lying outboard
		bad := bytes.Clone(b[s:e])
		bad[0] ^= 1
		if ob.Verify(bad, s) == nil {
			t.Fatalf("an accepted outboard verified a flipped byte at %d", s)
		}
	})
}

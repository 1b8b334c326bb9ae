package storeclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"lukechampine.com/blake3/bao"
	"lukechampine.com/blake3/guts"
)

// The bao outboard format of storefs, carried in StatBlobResponse.bao and
// kept by the local store (docs/store-urls.md, "Verified streaming"):
//
//   - an outboard encoding (the blob's bytes are not in it) of the blob's
//     BLAKE3 tree, as in the Bao specification, but with chunk groups of
//     2^BaoGroupLog BLAKE3 chunks: BaoGroupSize (64 KiB) bytes are the
//     smallest unit that can be verified on its own;
//   - 8 bytes: the blob's length, little-endian; then every parent node of
//     the tree above the chunk groups, in pre-order (a node before its
//     left subtree, the left subtree before the right), each as its two
//     32-byte chaining values (left, right), little-endian words;
//   - so a blob of at most one group has an outboard of only the length,
//     and a blob of n > 1 groups one of 8 + 64*(n-1) bytes.
//
// It is what lukechampine.com/blake3/bao.Encode writes with group
// BaoGroupLog and outboard true; the root is the blob's digest.
const (
	// BaoGroupLog is log2 of the BLAKE3 chunks (1 KiB) per chunk group.
	BaoGroupLog = 6
	// BaoGroupSize is the length of a chunk group: 64 KiB.
	BaoGroupSize = 1024 << BaoGroupLog
	// MaxOutboardSize bounds the outboards storefs sends and accepts:
	// 64 MiB, the outboard of a blob of about 64 GiB. Larger blobs are
	// served without one (read whole, then verified).
	MaxOutboardSize = 64 << 20
)

// ErrNoOutboard is returned by BlobOutboard when the store has no bao
// outboard for a blob (or offers none at all).
var ErrNoOutboard = errors.New("no bao outboard")

// OutboardSize returns the length in bytes of the outboard of a blob of
// size bytes.
func OutboardSize(size int64) int64 {
	if size <= BaoGroupSize {
		return 8
	}
	groups := (size + BaoGroupSize - 1) / BaoGroupSize
	return 8 + 64*(groups-1)
}

// EncodeOutboard reads size bytes from r and returns their outboard and
// their digest. A reader that ends early is an error.
func EncodeOutboard(r io.Reader, size int64) ([]byte, Digest, error) {
	if size < 0 || OutboardSize(size) > MaxOutboardSize {
		return nil, Digest{}, fmt.Errorf("encode outboard: a blob of %d bytes is too large for one", size)
	}
	buf := &writerAt{b: make([]byte, OutboardSize(size))}
	root, err := bao.Encode(buf, r, size, BaoGroupLog, true)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("blob shorter than %d bytes: %w", size, io.ErrUnexpectedEOF)
		}
		return nil, Digest{}, fmt.Errorf("encode outboard: %w", err)
	}
	return buf.b, Digest(root), nil
}

type writerAt struct{ b []byte }

func (w *writerAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(w.b)) {
		return 0, fmt.Errorf("outboard write at %d+%d past its %d bytes", off, len(p), len(w.b))
	}
	return copy(w.b[off:], p), nil
}

// Outboard is the checked outboard of one blob: its length header agrees
// with the blob's size, its length with the format, and (for a blob of more
// than one group) its top node hashes to the blob's digest. Its Verify
// checks ranges of the blob's bytes. It is immutable and safe for
// concurrent use.
type Outboard struct {
	digest Digest
	size   int64
	enc    []byte
}

// ParseOutboard checks enc as the outboard of blob d of size bytes. Errors
// wrap ErrCorrupt and say what is wrong: an outboard of another blob, of
// another size or of the wrong length.
func ParseOutboard(d Digest, size int64, enc []byte) (*Outboard, error) {
	if size < 0 {
		return nil, fmt.Errorf("outboard of blob %s: negative size %d: %w", d, size, ErrCorrupt)
	}
	if want := OutboardSize(size); int64(len(enc)) != want {
		return nil, fmt.Errorf("outboard of blob %s has %d bytes, a blob of %d bytes needs %d: %w", d, len(enc), size, want, ErrCorrupt)
	}
	if n := binary.LittleEndian.Uint64(enc); n != uint64(size) {
		return nil, fmt.Errorf("outboard of blob %s is for %d bytes, the blob has %d: %w", d, n, size, ErrCorrupt)
	}
	if size > BaoGroupSize {
		l, r := chainingValue(enc[8:40]), chainingValue(enc[40:72])
		root := guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, guts.FlagRoot))
		var got Digest
		for i, w := range root {
			binary.LittleEndian.PutUint32(got[4*i:], w)
		}
		if got != d {
			return nil, fmt.Errorf("outboard of blob %s has the root %s (another blob's): %w", d, got, ErrCorrupt)
		}
	}
	return &Outboard{digest: d, size: size, enc: enc}, nil
}

func chainingValue(b []byte) (cv [8]uint32) {
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}

// Digest returns the digest of the blob the outboard belongs to.
func (o *Outboard) Digest() Digest { return o.digest }

// Size returns the blob's length.
func (o *Outboard) Size() int64 { return o.size }

// Bytes returns the encoding; the caller must not modify it.
func (o *Outboard) Bytes() []byte { return o.enc }

// GroupSpan returns the range [start, end) of whole chunk groups covering
// the n bytes at off, clipped to the blob: the bytes Verify needs to check
// them.
func (o *Outboard) GroupSpan(off, n int64) (start, end int64) {
	start = off / BaoGroupSize * BaoGroupSize
	end = min(o.size, (off+n+BaoGroupSize-1)/BaoGroupSize*BaoGroupSize)
	return start, max(start, end)
}

// Verify checks that data are the blob's bytes at off. off must be the start
// of a chunk group and data whole groups (the last may end at the blob's
// end), as GroupSpan gives them. A mismatch is an error wrapping ErrCorrupt.
func (o *Outboard) Verify(data []byte, off int64) error {
	end := off + int64(len(data))
	switch {
	case off < 0 || off%BaoGroupSize != 0 || end > o.size:
		return fmt.Errorf("verify blob %s: %d bytes at %d are not whole chunk groups of its %d bytes", o.digest, len(data), off, o.size)
	case end%BaoGroupSize != 0 && end != o.size:
		return fmt.Errorf("verify blob %s: %d bytes at %d do not end a chunk group", o.digest, len(data), off)
	case len(data) == 0 && o.size > 0:
		return nil
	}
	if !bao.VerifyChunk(data, o.enc, BaoGroupLog, uint64(off), o.digest) {
		return fmt.Errorf("blob %s: bytes %d-%d do not match its bao tree: %w", o.digest, off, end, ErrCorrupt)
	}
	return nil
}

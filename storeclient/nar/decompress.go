package nar

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/storefs/storefs/storeclient"
)

// Compression is how a NAR file is compressed, named as in the Compression
// field of a narinfo.
type Compression string

// The compressions Decompress reads.
const (
	CompressionNone  Compression = "none"
	CompressionXZ    Compression = "xz"
	CompressionZstd  Compression = "zstd"
	CompressionBzip2 Compression = "bzip2"
)

// MaxZstdWindow is the largest window a zstd stream may ask for, which is
// the memory its decoder holds. It is enough for every level of the zstd
// program and of Nix (at most 8 MiB) and for --long (128 MiB, windowLog
// 27); a stream made with --long=28 or more is refused.
const MaxZstdWindow = 128 << 20

// SupportedCompressions names the compressions Decompress reads, for
// messages.
const SupportedCompressions = "none, xz, zstd, bzip2"

// Supported reports whether Decompress reads c.
func (c Compression) Supported() bool {
	switch c {
	case CompressionNone, CompressionXZ, CompressionZstd, CompressionBzip2:
		return true
	}
	return false
}

// inputBuffer is the size of the buffer between a decoder and its source.
// The xz decoder reads its input a byte at a time, so without it every
// byte of a .nar.xz file would be a read system call.
const inputBuffer = 64 << 10

// Magic bytes of the compressed forms DetectCompression recognises. A NAR
// starts with the length of "nix-archive-1" (13, 0, 0, …), which none of
// them does.
const (
	xzMagic    = "\xfd7zXZ\x00"
	zstdMagic  = "\x28\xb5\x2f\xfd"
	bzip2Magic = "BZh" // and the block size, '1' to '9'
	magicLen   = len(xzMagic)
)

// DetectCompression recognises the compression of the NAR file read from r
// by its magic bytes, not by a name, and returns it with a reader of the
// whole file (the bytes peeked at, then the rest of r). Anything not
// recognised, however short, is CompressionNone: a reader of the NAR then
// says what is wrong with it. The returned reader has no buffer of its own.
func DetectCompression(r io.Reader) (Compression, io.Reader, error) {
	var head [magicLen]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", nil, fmt.Errorf("read NAR: %w", err)
	}
	whole := io.MultiReader(bytes.NewReader(head[:n]), r)
	h := string(head[:n])
	switch {
	case strings.HasPrefix(h, xzMagic):
		return CompressionXZ, whole, nil
	case strings.HasPrefix(h, zstdMagic):
		return CompressionZstd, whole, nil
	case strings.HasPrefix(h, bzip2Magic) && len(h) > len(bzip2Magic) && '1' <= h[3] && h[3] <= '9':
		return CompressionBzip2, whole, nil
	}
	return CompressionNone, whole, nil
}

// Decompressor reads the NAR inside a compressed file. It is in package nar,
// next to the Reader, because a compressed NAR is still a NAR to those who
// read one: the importer (`storefs import --nar`, a file recognised by its
// magic bytes) and the binary cache (a file whose narinfo names its
// compression) both want the NAR inside, with the same decoders, limits,
// input buffering and errors.
//
// Its errors follow one convention: data the decoder cannot decode
// (damaged, truncated, beyond MaxZstdWindow) is an error wrapping
// storeclient.ErrCorrupt that names the compression; a failure of the
// source reader (a download cut short, a canceled context) is returned as
// the source returned it, never as corrupt data, since the file itself
// may be fine.
type Decompressor struct {
	c     Compression
	src   *sourceReader // nil for CompressionNone
	dec   io.Reader
	close func()
}

// Decompress returns a reader of the NAR in r, a file compressed with c.
// For a compressed file it reads r through a buffer of its own, in large
// reads whatever the decoder asks for; CompressionNone reads r directly
// (the NAR Reader has a buffer, and a second one would copy every byte once
// more). An unknown compression is an error wrapping errors.ErrUnsupported.
//
// Limits: a zstd stream may use a window of up to MaxZstdWindow. The xz
// decoder allocates the dictionary a block header asks for (at most
// 4 GiB, of which only the pages the output reaches are touched): package
// xz offers no bound (xz's default preset, -6, uses 8 MiB, and -9 uses
// 64 MiB). bzip2 blocks are at most 900 kB.
// The caller must Close the Decompressor, which does not close r.
func Decompress(r io.Reader, c Compression) (*Decompressor, error) {
	switch c {
	case CompressionNone:
		return &Decompressor{c: c, dec: r, close: func() {}}, nil
	case CompressionXZ, CompressionZstd, CompressionBzip2:
	default:
		return nil, fmt.Errorf("NAR compression %q: %w", string(c), errors.ErrUnsupported)
	}
	d := &Decompressor{c: c, src: &sourceReader{r: r}, close: func() {}}
	in := bufio.NewReaderSize(d.src, inputBuffer)
	// An empty file holds no compressed stream, though the zstd decoder
	// reads it as an empty one.
	if _, err := in.Peek(1); err != nil {
		return nil, d.wrap(err)
	}
	switch c {
	case CompressionXZ:
		xr, err := xz.NewReader(in)
		if err != nil {
			return nil, d.wrap(err)
		}
		d.dec = xr
	case CompressionZstd:
		// One goroutine decodes: the decoder's own concurrency costs more
		// CPU than it saves time, and callers that want decoding beside
		// parsing run the Decompressor on a goroutine of its own.
		zr, err := zstd.NewReader(in, zstd.WithDecoderMaxWindow(MaxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err) // options only: the stream is read later
		}
		d.dec, d.close = zr, zr.Close
	case CompressionBzip2:
		d.dec = bzip2.NewReader(in)
	}
	return d, nil
}

// Compression returns the compression d decodes.
func (d *Decompressor) Compression() Compression { return d.c }

// Read implements io.Reader: it returns the NAR's bytes and io.EOF at the
// end of the compressed file.
func (d *Decompressor) Read(p []byte) (int, error) {
	n, err := d.dec.Read(p)
	if err != nil && err != io.EOF && d.src != nil {
		err = d.wrap(err)
	}
	return n, err
}

// Close releases the decoder. It does not close the source reader.
func (d *Decompressor) Close() error {
	d.close()
	return nil
}

// wrap returns the error for err, an error of the decoder: the source's
// own failure if it failed, else err as corrupt data. A file that ends
// inside the compressed stream is corrupt: io.EOF becomes
// io.ErrUnexpectedEOF.
func (d *Decompressor) wrap(err error) error {
	if d.src.err != nil {
		return d.src.err
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %w", storeclient.ErrCorrupt, d.c, err)
}

// sourceReader keeps the first error of its reader other than io.EOF, so a
// decoder's error can be told from a failure of what it reads.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

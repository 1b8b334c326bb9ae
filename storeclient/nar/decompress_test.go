package nar_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// bzip2Text is what testdata/text.bz2 holds (made with bzip2 -9: the
// standard library has no bzip2 encoder).
var bzip2Text = strings.Repeat("storefs bzip2 test: the NAR decompressor reads this.\n", 200)

// randomText returns n bytes of random words, the same every run. They
// compress to about a third, so the decoders decode them with their
// entropy coders (random bytes would be copied from stored blocks, in
// large reads whatever the buffering).
func randomText(n int) []byte {
	words := strings.Fields("nix store path narinfo blob digest castore directory symlink " +
		"file executable hash signature closure reference cache fetch import verify mount")
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, " \n"[r.IntN(2)])
	}
	return b[:n]
}

func compressXZ(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compressZstd(t *testing.T, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// compressedFile is a file compressed with c and the plain bytes in it.
type compressedFile struct {
	c           nar.Compression
	file, plain []byte
}

// compressedFiles returns a file of plain in each compression (bzip2: of
// bzip2Text, from testdata).
func compressedFiles(t *testing.T, plain []byte) []compressedFile {
	t.Helper()
	bz, err := os.ReadFile("testdata/text.bz2")
	if err != nil {
		t.Fatal(err)
	}
	return []compressedFile{
		{nar.CompressionXZ, compressXZ(t, plain), plain},
		{nar.CompressionZstd, compressZstd(t, plain), plain},
		{nar.CompressionBzip2, bz, []byte(bzip2Text)},
	}
}

// plainNAR returns a NAR of a single file with contents data.
func plainNAR(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	e := nar.NewEncoder(&b)
	if err := e.File(uint64(len(data)), false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// decompressAll decompresses file, compressed with c, from r.
func decompressAll(r io.Reader, c nar.Compression) ([]byte, error) {
	d, err := nar.Decompress(r, c)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}

func TestDecompressRoundTrip(t *testing.T) {
	plain := plainNAR(t, randomText(100_000))
	files := append(compressedFiles(t, plain), compressedFile{nar.CompressionNone, plain, plain})
	for _, f := range files {
		t.Run(string(f.c), func(t *testing.T) {
			got, err := decompressAll(bytes.NewReader(f.file), f.c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.plain) {
				t.Fatalf("decompressed %d bytes, want the %d bytes compressed", len(got), len(f.plain))
			}
			c, r, err := nar.DetectCompression(bytes.NewReader(f.file))
			if err != nil {
				t.Fatal(err)
			}
			if c != f.c {
				t.Fatalf("detected %q, want %q", c, f.c)
			}
			d, err := nar.Decompress(r, c)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Compression() != f.c {
				t.Errorf("Compression() = %q, want %q", d.Compression(), f.c)
			}
			if got, err := io.ReadAll(d); err != nil || !bytes.Equal(got, f.plain) {
				t.Fatalf("after detection: %d bytes, %v; want the %d bytes compressed", len(got), err, len(f.plain))
			}
		})
	}
}

func TestDetectCompression(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		want       nar.Compression
	}{
		{"empty", "", nar.CompressionNone},
		{"NAR", "\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1", nar.CompressionNone},
		{"xz", "\xfd7zXZ\x00\x00\x04", nar.CompressionXZ},
		{"xz, cut in the magic", "\xfd7zXZ", nar.CompressionNone},
		{"zstd", "\x28\xb5\x2f\xfd\x00", nar.CompressionZstd},
		{"zstd, only the magic", "\x28\xb5\x2f\xfd", nar.CompressionZstd},
		{"bzip2", "BZh91AY&SY", nar.CompressionBzip2},
		{"bzip2 with block size 0", "BZh01AY&SY", nar.CompressionNone},
		{"BZh alone", "BZh", nar.CompressionNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r, err := nar.DetectCompression(strings.NewReader(tc.head))
			if err != nil {
				t.Fatal(err)
			}
			if c != tc.want {
				t.Errorf("detected %q, want %q", c, tc.want)
			}
			if b, err := io.ReadAll(r); err != nil || string(b) != tc.head {
				t.Errorf("the reader returned %q, %v; want the whole input %q", b, err, tc.head)
			}
		})
	}
	errRead := errors.New("disk on fire")
	if _, _, err := nar.DetectCompression(iotest.ErrReader(errRead)); !errors.Is(err, errRead) {
		t.Errorf("DetectCompression of a failing reader: %v, want its error", err)
	}
}

// readCounter counts the Read calls made to it.
type readCounter struct {
	r     io.Reader
	calls int
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.calls++
	return c.r.Read(p)
}

// TestDecompressReadsInBlocks checks that the decoders read their input in
// blocks: the xz decoder asks for a byte at a time, which from a file is
// a system call per byte.
func TestDecompressReadsInBlocks(t *testing.T) {
	plain := plainNAR(t, randomText(512<<10))
	for _, f := range compressedFiles(t, plain)[:2] {
		t.Run(string(f.c), func(t *testing.T) {
			src := &readCounter{r: bytes.NewReader(f.file)}
			got, err := decompressAll(src, f.c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("decompressed bytes differ")
			}
			if max := len(f.file) / 1000; src.calls > max {
				t.Fatalf("%d reads of a %d-byte %s file, want at most %d", src.calls, len(f.file), f.c, max)
			}
			t.Logf("%d reads of a %d-byte %s file", src.calls, len(f.file), f.c)
		})
	}
}

// TestDecompressErrors checks the error convention: damaged or truncated
// data wraps storeclient.ErrCorrupt and names the compression; a failure
// of the source is returned as the source's error, not as corrupt data.
func TestDecompressErrors(t *testing.T) {
	plain := plainNAR(t, randomText(100_000))
	errSource := errors.New("connection reset")
	for _, f := range compressedFiles(t, plain) {
		for _, tc := range []struct {
			name    string
			src     func([]byte) io.Reader
			corrupt bool
		}{
			{"flipped byte", func(b []byte) io.Reader {
				b = bytes.Clone(b)
				b[len(b)/2] ^= 0x40
				return bytes.NewReader(b)
			}, true},
			{"truncated", func(b []byte) io.Reader { return bytes.NewReader(b[:len(b)/2]) }, true},
			{"only the magic", func(b []byte) io.Reader { return bytes.NewReader(b[:4]) }, true},
			{"empty", func([]byte) io.Reader { return bytes.NewReader(nil) }, true},
			{"source fails", func(b []byte) io.Reader {
				return io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(errSource))
			}, false},
			{"source cut short", func(b []byte) io.Reader {
				return io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(io.ErrUnexpectedEOF))
			}, false},
		} {
			t.Run(string(f.c)+"/"+tc.name, func(t *testing.T) {
				_, err := decompressAll(tc.src(f.file), f.c)
				if err == nil {
					t.Fatal("no error")
				}
				if got := errors.Is(err, storeclient.ErrCorrupt); got != tc.corrupt {
					t.Fatalf("error %q: corrupt is %v, want %v", err, got, tc.corrupt)
				}
				if tc.corrupt && !strings.Contains(err.Error(), string(f.c)) {
					t.Errorf("error %q does not name %s", err, f.c)
				}
				if !tc.corrupt && !errors.Is(err, errSource) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("error %q is not the source's", err)
				}
			})
		}
	}
}

// zstdFrame returns an empty zstd frame whose header asks for a window of
// 1<<windowLog bytes.
func zstdFrame(windowLog int) []byte {
	return []byte{
		0x28, 0xb5, 0x2f, 0xfd, // magic
		0x00,                    // no single segment, no content size, no checksum
		byte(windowLog-10) << 3, // window descriptor: exponent, no mantissa
		0x01, 0x00, 0x00,        // the last block, raw, empty
	}
}

func TestDecompressZstdWindow(t *testing.T) {
	if _, err := decompressAll(bytes.NewReader(zstdFrame(27)), nar.CompressionZstd); err != nil {
		t.Fatalf("a frame with a %d MiB window (zstd --long): %v", 1<<27>>20, err)
	}
	_, err := decompressAll(bytes.NewReader(zstdFrame(28)), nar.CompressionZstd)
	if !errors.Is(err, zstd.ErrWindowSizeExceeded) || !errors.Is(err, storeclient.ErrCorrupt) {
		t.Fatalf("a frame with a %d MiB window: %v, want the window refused as corrupt data", 1<<28>>20, err)
	}
	if nar.MaxZstdWindow != 1<<27 {
		t.Errorf("MaxZstdWindow is %d; the frames above assume 128 MiB", nar.MaxZstdWindow)
	}
}

func TestDecompressUnsupported(t *testing.T) {
	if _, err := nar.Decompress(strings.NewReader("x"), "br"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Decompress with compression br: %v, want errors.ErrUnsupported", err)
	}
}

// FuzzDecompress feeds arbitrary bytes to detection and to the zstd and
// bzip2 decoders: no panic, and a failure is ErrCorrupt (the input is an
// in-memory reader that never fails). xz is left out: package xz reserves
// whatever dictionary a block header asks for (up to 4 GiB), see
// Decompress.
func FuzzDecompress(f *testing.F) {
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write([]byte("nix-archive-1 and some more bytes"))
	zw.Close()
	f.Add(zbuf.Bytes())
	if b, err := os.ReadFile("testdata/text.bz2"); err == nil {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _, err := nar.DetectCompression(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("DetectCompression of an in-memory reader: %v", err)
		}
		if c == nar.CompressionXZ {
			return
		}
		for _, c := range []nar.Compression{c, nar.CompressionZstd, nar.CompressionBzip2} {
			if c == nar.CompressionXZ {
				continue
			}
			d, err := nar.Decompress(bytes.NewReader(in), c)
			if err == nil {
				_, err = io.Copy(io.Discard, io.LimitReader(d, 1<<20))
				d.Close()
			}
			if err != nil && !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("%s: %v, want ErrCorrupt", c, err)
			}
		}
	})
}

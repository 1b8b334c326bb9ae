package nar_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
	"github.com/storefs/storefs/storeclient/storetest"
)

func filledStore(t *testing.T) (*memory.Store, *storetest.Fixtures) {
	t.Helper()
	s := memory.New()
	f := storetest.NewFixtures()
	if err := f.Fill(context.Background(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	return s, f
}

// TestWriteNARVectors checks the NAR hashes of vectors.md.
func TestWriteNARVectors(t *testing.T) {
	s, f := filledStore(t)
	cases := []struct {
		name string
		node storeclient.Node
		size int
		hex  string
	}{
		{"HELLOWORLD", storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 12, false), 128,
			"03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040"},
		{"symlink", storeclient.SymlinkNode(storetest.SymlinkOutTarget), 136,
			"097d397e9b5826384eaa16c457715d1c1a51670313ead0f58566e0b232539cf1"},
		{"DIRECTORY_COMPLICATED", storeclient.DirectoryNode(f.DirectoryComplicated.Digest(), f.DirectoryComplicated.Size()), 840,
			"ebd52279a8df024c9fd5718de4103bf5e760dc7f2cf49044ee7dea87ab16911a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := nar.WriteNAR(context.Background(), &buf, s, c.node); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(buf.Bytes())
			if buf.Len() != c.size || hex.EncodeToString(sum[:]) != c.hex {
				t.Fatalf("NAR has %d bytes, sha256 %x; want %d, %s", buf.Len(), sum, c.size, c.hex)
			}
			n, h, err := nar.Hash(context.Background(), s, c.node)
			if err != nil || n != uint64(c.size) || h != sum {
				t.Fatalf("Hash = %d, %x, %v; want %d, %x", n, h, err, c.size, sum)
			}
			// The Reader accepts it and sees the same tree.
			if got := dumpEvents(t, bytes.NewReader(buf.Bytes())); got == "" {
				t.Fatal("no events")
			}
		})
	}
}

func TestWriteNARCorruptStore(t *testing.T) {
	s, f := filledStore(t)
	ctx := context.Background()
	cases := []struct {
		name string
		node storeclient.Node
	}{
		{"missing blob", storeclient.FileNode(storeclient.HashBytes([]byte("nope")), 4, false)},
		{"blob size disagrees", storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 13, false)},
		{"missing directory", storeclient.DirectoryNode(storeclient.HashBytes([]byte("nope")), 2)},
		{"directory size disagrees", storeclient.DirectoryNode(f.DirectoryWithKeep.Digest(), 3)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := nar.WriteNAR(ctx, io.Discard, s, c.node); err == nil {
				t.Fatal("WriteNAR succeeded")
			}
		})
	}
}

// untrusted hides the memory store's TrustedLocal so WriteNAR verifies.
type untrusted struct{ nar.Source }

type lyingStore struct {
	*memory.Store
	data []byte
}

func (l lyingStore) OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error) {
	return nopCloser{bytes.NewReader(l.data)}, nil
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func TestWriteNARVerifiesBlobs(t *testing.T) {
	s, _ := filledStore(t)
	node := storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 12, false)
	bad := untrusted{lyingStore{s, []byte("Hello World?")}}
	err := nar.WriteNAR(context.Background(), io.Discard, bad, node)
	if !errors.Is(err, storeclient.ErrCorrupt) {
		t.Fatalf("WriteNAR of a corrupt blob = %v, want ErrCorrupt", err)
	}
	if err := nar.WriteNAR(context.Background(), io.Discard, untrusted{s}, node); err != nil {
		t.Fatalf("WriteNAR of a good blob through the verifying path: %v", err)
	}
}

func TestEncoderMisuse(t *testing.T) {
	cases := []struct {
		name string
		run  func(e *nar.Encoder) error
	}{
		{"two roots", func(e *nar.Encoder) error {
			if err := e.Symlink("x"); err != nil {
				return nil
			}
			return e.Symlink("y")
		}},
		{"entries out of order", func(e *nar.Encoder) error {
			e.Directory()
			e.Entry("b")
			e.Symlink("x")
			return e.Entry("a")
		}},
		{"duplicate entry", func(e *nar.Encoder) error {
			e.Directory()
			e.Entry("a")
			e.Symlink("x")
			return e.Entry("a")
		}},
		{"bad name", func(e *nar.Encoder) error {
			e.Directory()
			return e.Entry("a/b")
		}},
		{"too much content", func(e *nar.Encoder) error {
			e.File(2, false)
			_, err := e.Write([]byte("abc"))
			return err
		}},
		{"incomplete", func(e *nar.Encoder) error {
			e.File(2, false)
			e.Write([]byte("a"))
			return e.Close()
		}},
		{"end without directory", func(e *nar.Encoder) error { return e.End() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(nar.NewEncoder(io.Discard)); err == nil {
				t.Fatal("misuse was accepted")
			}
		})
	}
}

// dumpEvents reads a whole NAR and renders its events, failing t on error.
func dumpEvents(t *testing.T, r io.Reader) string {
	t.Helper()
	s, err := events(r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func events(r io.Reader) (string, error) {
	nr := nar.NewReader(r)
	var b strings.Builder
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		b.WriteString(strings.Repeat(" ", h.Depth))
		b.WriteString(h.Type.String() + " " + h.Name)
		switch h.Type {
		case nar.TypeRegular:
			data, err := io.ReadAll(nr)
			if err != nil {
				return b.String(), err
			}
			if uint64(len(data)) != h.Size {
				return b.String(), errors.New("short contents")
			}
			b.WriteString(" " + string(data))
			if h.Executable {
				b.WriteString(" x")
			}
		case nar.TypeSymlink:
			b.WriteString(" -> " + h.Target)
		}
		b.WriteString("\n")
	}
}

// str encodes one NAR string.
func str(s string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	b = append(b, s...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func tokens(ts ...string) []byte {
	var b []byte
	for _, t := range ts {
		b = append(b, str(t)...)
	}
	return b
}

func TestReaderRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	e := nar.NewEncoder(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Directory())
	must(e.Entry("sub"))
	must(e.Directory())
	must(e.Entry("empty"))
	must(e.File(0, false))
	must(e.Entry("ln"))
	must(e.Symlink("../x"))
	must(e.End())
	must(e.Entry("z"))
	must(e.Directory())
	must(e.End())
	must(e.Entry("\xff\xfe"))
	must(e.File(5, true))
	_, err := e.Write([]byte("hello"))
	must(err)
	must(e.End())
	must(e.Close())
	if e.Size() != uint64(buf.Len()) {
		t.Fatalf("Size() = %d, wrote %d", e.Size(), buf.Len())
	}
	got := dumpEvents(t, bytes.NewReader(buf.Bytes()))
	// Entries come in NAR (sorted) order; an end marker has the depth of
	// the directory it ends.
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	wantLines := []string{
		"directory ",
		" directory sub",
		"  regular empty ",
		"  symlink ln -> ../x",
		" end of directory ",
		" directory z",
		" end of directory ",
		" regular \xff\xfe hello x",
		"end of directory ",
	}
	if strings.Join(lines, "|") != strings.Join(wantLines, "|") {
		t.Fatalf("events:\n%q\nwant\n%q", lines, wantLines)
	}
}

func TestReaderRejects(t *testing.T) {
	magic := str(nar.Magic)
	file := func(extra ...string) []byte {
		b := append([]byte{}, magic...)
		b = append(b, tokens("(", "type", "regular", "contents")...)
		b = append(b, str("hi")...)
		return append(b, tokens(extra...)...)
	}
	dir := func(entries ...[]byte) []byte {
		b := append([]byte{}, magic...)
		b = append(b, tokens("(", "type", "directory")...)
		for _, e := range entries {
			b = append(b, e...)
		}
		return append(b, str(")")...)
	}
	entry := func(name string) []byte {
		return tokens("entry", "(", "name", name, "node", "(", "type", "symlink", "target", "t", ")", ")")
	}
	valid := dir(entry("a"), entry("b"))
	if _, err := events(bytes.NewReader(valid)); err != nil {
		t.Fatalf("valid NAR rejected: %v", err)
	}
	if _, err := events(bytes.NewReader(file(")"))); err != nil {
		t.Fatalf("valid file NAR rejected: %v", err)
	}
	badPad := file(")")
	badPad[len(magic)+4*16+8+3] = 1 // a padding byte after "hi"
	cases := map[string][]byte{
		"empty":             nil,
		"bad magic":         tokens("nix-archive-2"),
		"truncated":         valid[:len(valid)-3],
		"trailing data":     append(append([]byte{}, valid...), 0),
		"unsorted":          dir(entry("b"), entry("a")),
		"duplicate":         dir(entry("a"), entry("a")),
		"dot":               dir(entry(".")),
		"dotdot":            dir(entry("..")),
		"empty name":        dir(entry("")),
		"slash":             dir(entry("a/b")),
		"nul":               dir(entry("a\x00b")),
		"unknown type":      append(append([]byte{}, magic...), tokens("(", "type", "fifo", ")")...),
		"unknown dir token": dir(tokens("foo")),
		"bad padding":       badPad,
		"missing close":     file(),
		"huge file":         append(append(append([]byte{}, magic...), tokens("(", "type", "regular", "contents")...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"huge name":         dir(entry(strings.Repeat("n", 256))),
		"empty target":      append(append([]byte{}, magic...), tokens("(", "type", "symlink", "target", "", ")")...),
		"executable marker": append(append([]byte{}, magic...), tokens("(", "type", "regular", "executable", "x", "contents", "", ")")...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := events(bytes.NewReader(data))
			if !errors.Is(err, nar.ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzReader(f *testing.F) {
	s := memory.New()
	fx := storetest.NewFixtures()
	if err := fx.Fill(context.Background(), s, storetest.FillOptions{}); err != nil {
		f.Fatal(err)
	}
	for _, n := range []storeclient.Node{
		storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 12, true),
		storeclient.SymlinkNode(storetest.SymlinkOutTarget),
		storeclient.DirectoryNode(fx.DirectoryComplicated.Digest(), fx.DirectoryComplicated.Size()),
		storeclient.DirectoryNode(fx.DirectoryD.Digest(), fx.DirectoryD.Size()),
	} {
		var buf bytes.Buffer
		if err := nar.WriteNAR(context.Background(), &buf, s, n); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Whatever the input, decoding ends with EOF or an error, and a
		// NAR the Reader accepts re-encodes to the same bytes.
		out, err := reencode(data)
		if err == nil && !bytes.Equal(out, data) {
			t.Fatalf("accepted NAR re-encodes differently:\n%x\n%x", data, out)
		}
	})
}

// reencode decodes a NAR and encodes it again.
func reencode(data []byte) ([]byte, error) {
	nr := nar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	e := nar.NewEncoder(&out)
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return out.Bytes(), e.Close()
		}
		if err != nil {
			return nil, err
		}
		if h.Depth > 0 && h.Type != nar.TypeEndDirectory {
			if err := e.Entry(h.Name); err != nil {
				return nil, err
			}
		}
		switch h.Type {
		case nar.TypeRegular:
			if err := e.File(h.Size, h.Executable); err != nil {
				return nil, err
			}
			if _, err := io.Copy(e, nr); err != nil {
				return nil, err
			}
		case nar.TypeSymlink:
			err = e.Symlink(h.Target)
		case nar.TypeDirectory:
			err = e.Directory()
		case nar.TypeEndDirectory:
			err = e.End()
		}
		if err != nil {
			return nil, err
		}
	}
}

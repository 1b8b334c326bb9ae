package binarycache

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
)

// readCountingTransport counts the Read calls and bytes of the NAR files
// it opens.
type readCountingTransport struct {
	transport
	reads, bytes atomic.Int64
}

func (c *readCountingTransport) get(ctx context.Context, rel string) (io.ReadCloser, error) {
	rc, err := c.transport.get(ctx, rel)
	if err != nil || !strings.HasPrefix(rel, "nar/") {
		return rc, err
	}
	return &countedBody{ReadCloser: rc, t: c}, nil
}

type countedBody struct {
	io.ReadCloser
	t *readCountingTransport
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.reads.Add(1)
	b.t.bytes.Add(int64(n))
	return n, err
}

// wordText returns n bytes of random words, the same every run: text
// that compresses to about a third, decoded by the entropy coders.
func wordText(n int) string {
	words := strings.Fields("nix store path narinfo blob digest castore directory symlink " +
		"file executable hash signature closure reference cache fetch import verify mount")
	r := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(" \n"[r.IntN(2)])
	}
	return b.String()[:n]
}

// TestFetchReadsInBlocks checks that a fetch reads the NAR file in blocks:
// the xz decoder asks for a byte at a time, and a file:// cache served
// each of them with a read system call (a 126 MiB NAR took a minute).
func TestFetchReadsInBlocks(t *testing.T) {
	content := wordText(512 << 10)
	for _, c := range []string{"none", "xz", "zstd"} {
		t.Run(c, func(t *testing.T) {
			key := newTestKey(t, "k-1")
			dir := t.TempDir()
			p := iaPath(t, "words", testNAR(t, content))
			writeCache(t, dir, c, []cachePath{p}, key)
			s, _, _ := openTest(t, "nix+file://"+dir+"?trusted-public-keys="+key.public().String())
			ct := &readCountingTransport{transport: s.t}
			s.t = ct
			checkServed(t, s, p)
			reads, n := ct.reads.Load(), ct.bytes.Load()
			if n == 0 {
				t.Fatal("the NAR file was not read through the transport")
			}
			if max := n / 1000; reads > max {
				t.Fatalf("%d reads of a %d-byte %s NAR file, want at most %d", reads, n, c, max)
			}
			t.Logf("%d reads of a %d-byte %s NAR file", reads, n, c)
		})
	}
}

package binarycache

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
)

// testKey is a signing key for synthetic caches.
type testKey struct {
	name string
	priv ed25519.PrivateKey
}

func newTestKey(t *testing.T, name string) testKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{name: name, priv: priv}
}

func (k testKey) public() PublicKey {
	return PublicKey{Name: k.name, Key: k.priv.Public().(ed25519.PublicKey)}
}

func (k testKey) sign(fp string) string {
	return k.name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, []byte(fp)))
}

// testNAR is a small canonical NAR: a directory with a file, an
// executable, an empty file and a symlink.
func testNAR(t *testing.T, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	e := nar.NewEncoder(&b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Directory())
	must(e.Entry("a.txt"))
	must(e.File(uint64(len(content)), false))
	_, err := e.Write([]byte(content))
	must(err)
	must(e.Entry("empty"))
	must(e.File(0, false))
	must(e.Entry("link"))
	must(e.Symlink("a.txt"))
	must(e.Entry("run.sh"))
	must(e.File(4, true))
	_, err = e.Write([]byte("#!x\n"))
	must(err)
	must(e.End())
	must(e.Close())
	return b.Bytes()
}

// cachePath is one path of a synthetic cache.
type cachePath struct {
	sp   storeclient.StorePath
	nar  []byte
	refs []storeclient.StorePath
	ca   string // narinfo CA line value, "" for input-addressed
}

// iaPath returns an input-addressed path (an arbitrary digest) with nar.
func iaPath(t *testing.T, name string, narBytes []byte, refs ...storeclient.StorePath) cachePath {
	t.Helper()
	h := sha256.Sum256([]byte("ia:" + name))
	sp, err := storeclient.NewStorePath(storeclient.StorePathDigest(h[:20]), name)
	if err != nil {
		t.Fatal(err)
	}
	return cachePath{sp: sp, nar: narBytes, refs: refs}
}

// caPath returns the content-addressed path nix-store --add gives nar.
func caPath(t *testing.T, name string, narBytes []byte) cachePath {
	t.Helper()
	sum := sha256.Sum256(narBytes)
	sp, err := storeclient.FixedOutputSourcePath(sum, name)
	if err != nil {
		t.Fatal(err)
	}
	return cachePath{sp: sp, nar: narBytes, ca: "fixed:r:sha256:" + nixbase32.EncodeToString(sum[:])}
}

// writeCache writes paths as a binary cache in dir, compressed with
// compression and signed with keys, the way nix copy writes one.
func writeCache(t *testing.T, dir, compression string, paths []cachePath, keys ...testKey) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		var file bytes.Buffer
		ext := ".nar"
		switch compression {
		case "none":
			file.Write(p.nar)
		case "xz":
			ext += ".xz"
			w, err := xz.NewWriter(&file)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(p.nar)
			w.Close()
		case "zstd":
			ext += ".zst"
			w, err := zstd.NewWriter(&file)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(p.nar)
			w.Close()
		default:
			t.Fatalf("compression %s", compression)
		}
		fh := sha256.Sum256(file.Bytes())
		nh := sha256.Sum256(p.nar)
		rel := "nar/" + nixbase32.EncodeToString(fh[:]) + ext
		if err := os.WriteFile(filepath.Join(dir, rel), file.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		var refs []string
		for _, r := range p.refs {
			refs = append(refs, r.Basename())
		}
		info := &storeclient.PathInfo{StorePath: p.sp, NarSize: uint64(len(p.nar)), NarSHA256: nh, References: p.refs}
		var ni strings.Builder
		fmt.Fprintf(&ni, "StorePath: %s\nURL: %s\nCompression: %s\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
			p.sp, rel, compression, nixbase32.EncodeToString(fh[:]), file.Len(), nixbase32.EncodeToString(nh[:]), len(p.nar), strings.Join(refs, " "))
		for _, k := range keys {
			fmt.Fprintf(&ni, "Sig: %s\n", k.sign(Fingerprint(info)))
		}
		if p.ca != "" {
			fmt.Fprintf(&ni, "CA: %s\n", p.ca)
		}
		if err := os.WriteFile(filepath.Join(dir, p.sp.Digest.String()+".narinfo"), []byte(ni.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// logCapture is a slog handler that keeps the messages of its records.
type logCapture struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

func (l *logCapture) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// openTest opens a Store over rawURL with a fresh memory cache and a
// captured log.
func openTest(t *testing.T, rawURL string) (*Store, *memory.Store, *logCapture) {
	t.Helper()
	cfg, err := ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	cache := memory.New()
	lc := &logCapture{}
	s, err := New(context.Background(), cfg, Options{Cache: cache, OwnCache: true, Logger: slog.New(lc)})
	if err != nil {
		t.Fatal(err)
	}
	if ht, ok := s.t.(*httpTransport); ok {
		ht.backoff = func(int) time.Duration { return 0 }
	}
	t.Cleanup(func() { s.Close() })
	return s, cache, lc
}

// pathInfos returns how many PathInfos a store holds.
func pathInfos(t *testing.T, s storeclient.Store) int {
	t.Helper()
	n := 0
	for _, err := range s.ListPathInfos(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// readAll reads a blob whole.
func readBlob(t *testing.T, s storeclient.Store, d storeclient.Digest) []byte {
	t.Helper()
	br, err := s.OpenBlob(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	b, err := io.ReadAll(io.NewSectionReader(br, 0, br.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

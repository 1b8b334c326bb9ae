package binarycache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// fixture is a synthetic cache with a CA path, an input-addressed path
// referring to it, and an unsigned input-addressed path.
type fixture struct {
	dir              string
	key              testKey
	ca, ia, unsigned cachePath
}

func newFixture(t *testing.T, compression string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), key: newTestKey(t, "test-cache-1")}
	f.ca = caPath(t, "tree", testNAR(t, "hello, binary cache\n"))
	f.ia = iaPath(t, "ia-path", testNAR(t, "input addressed "+f.ca.sp.Absolute()+"\n"), f.ca.sp)
	f.unsigned = iaPath(t, "unsigned", testNAR(t, "nobody signed me\n"))
	writeCache(t, f.dir, compression, []cachePath{f.ca, f.ia}, f.key)
	writeCache(t, f.dir, compression, []cachePath{f.unsigned})
	return f
}

func (f *fixture) url(extra string) string {
	u := "nix+file://" + f.dir + "?trusted-public-keys=" + f.key.public().String()
	return u + extra
}

// checkServed fetches p and checks that the cache store holds exactly its
// NAR's content.
func checkServed(t *testing.T, s *Store, p cachePath) *storeclient.PathInfo {
	t.Helper()
	ctx := context.Background()
	info, err := s.GetPathInfo(ctx, p.sp.Digest)
	if err != nil {
		t.Fatalf("GetPathInfo %s: %v", p.sp, err)
	}
	if info.StorePath != p.sp {
		t.Fatalf("got %s, want %s", info.StorePath, p.sp)
	}
	size, sum, err := nar.Hash(ctx, s, info.Node)
	if err != nil {
		t.Fatalf("NAR of %s from the cache store: %v", p.sp, err)
	}
	if size != uint64(len(p.nar)) || sum != info.NarSHA256 {
		t.Fatalf("%s: cache store content differs from the NAR", p.sp)
	}
	if len(info.References) != len(p.refs) {
		t.Fatalf("%s: references %v, want %v", p.sp, info.References, p.refs)
	}
	return info
}

func TestFetchCompressions(t *testing.T) {
	for _, c := range []string{"none", "xz", "zstd"} {
		t.Run(c, func(t *testing.T) {
			f := newFixture(t, c)
			s, cache, _ := openTest(t, f.url(""))
			checkServed(t, s, f.ca)
			info := checkServed(t, s, f.ia)
			if info.CA != nil || len(info.Signatures) != 1 || info.References[0] != f.ca.sp {
				t.Errorf("ia PathInfo: %+v", info)
			}
			if got := pathInfos(t, cache); got != 2 {
				t.Errorf("cache holds %d PathInfos, want 2", got)
			}
			if !storeclient.IsTrustedLocal(s) {
				t.Error("a store over a memory cache should be trusted-local")
			}
		})
	}
}

func TestSignatures(t *testing.T) {
	f := newFixture(t, "xz")
	wrong := newTestKey(t, "test-cache-1") // same name, other key
	other := newTestKey(t, "other-1")
	notFound := func(t *testing.T, s *Store, p cachePath, lc *logCapture) {
		t.Helper()
		_, err := s.GetPathInfo(context.Background(), p.sp.Digest)
		if !errors.Is(err, storeclient.ErrNotFound) || !errors.Is(err, errUntrusted) {
			t.Fatalf("GetPathInfo %s: %v, want untrusted not found", p.sp, err)
		}
		// Asked again, it is remembered: still one log line.
		if _, err := s.GetPathInfo(context.Background(), p.sp.Digest); !errors.Is(err, storeclient.ErrNotFound) {
			t.Fatalf("second GetPathInfo %s: %v", p.sp, err)
		}
		if n := lc.count("binary cache: refused untrusted path"); n != 1 {
			t.Fatalf("%d refusal log lines, want 1", n)
		}
	}
	t.Run("right key", func(t *testing.T) {
		s, _, lc := openTest(t, f.url(""))
		checkServed(t, s, f.ia)
		notFound(t, s, f.unsigned, lc)
	})
	t.Run("wrong key", func(t *testing.T) {
		s, cache, lc := openTest(t, "nix+file://"+f.dir+"?trusted-public-keys="+wrong.public().String())
		notFound(t, s, f.ia, lc)
		checkServed(t, s, f.ca) // content-addressed: trusted without a signature
		if n := pathInfos(t, cache); n != 1 {
			t.Errorf("cache holds %d PathInfos, want 1", n)
		}
	})
	t.Run("one of two keys", func(t *testing.T) {
		s, _, _ := openTest(t, "nix+file://"+f.dir+"?trusted-public-keys="+other.public().String()+"%20"+f.key.public().String())
		checkServed(t, s, f.ia)
	})
	t.Run("no keys", func(t *testing.T) {
		s, _, _ := openTest(t, "nix+file://"+f.dir)
		checkServed(t, s, f.unsigned)
	})
	t.Run("renamed", func(t *testing.T) {
		// The signature covers the name.
		dir := t.TempDir()
		writeCache(t, dir, "none", []cachePath{f.ia}, f.key)
		editNarinfo(t, dir, f.ia, func(s string) string { return strings.Replace(s, f.ia.sp.Name, "renamed", 1) })
		s, _, lc := openTest(t, "nix+file://"+dir+"?trusted-public-keys="+f.key.public().String())
		notFound(t, s, f.ia, lc)
	})
	t.Run("forged CA", func(t *testing.T) {
		// An input-addressed path claiming a content address does not
		// escape the signature check.
		p := f.unsigned
		p.sp.Name = "forged"
		sum := caPath(t, "x", p.nar).ca
		p.ca = sum
		dir := t.TempDir()
		writeCache(t, dir, "none", []cachePath{p})
		s, _, lc := openTest(t, "nix+file://"+dir+"?trusted-public-keys="+f.key.public().String())
		notFound(t, s, p, lc)
	})
}

// corrupt applies edit to the one NAR file of a one-path cache.
func corruptNAR(t *testing.T, dir string, edit func([]byte) []byte) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "nar", "*"))
	if len(files) != 1 {
		t.Fatalf("%d NAR files", len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[0], edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editNarinfo applies edit to the narinfo of p.
func editNarinfo(t *testing.T, dir string, p cachePath, edit func(string) string) {
	t.Helper()
	fn := filepath.Join(dir, p.sp.Digest.String()+".narinfo")
	b, err := os.ReadFile(fn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fn, []byte(edit(string(b))), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptNAR(t *testing.T) {
	key := newTestKey(t, "k-1")
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[min(off, len(b)-1)] ^= 1; return b }
	}
	for _, tc := range []struct {
		name, compression string
		nar               func([]byte) []byte
		narinfo           func(string) string
	}{
		{"flipped byte none", "none", flip(200), nil},
		{"flipped byte in contents none", "none", func(b []byte) []byte { b[bytes.Index(b, []byte("payload"))+3] ^= 1; return b }, nil},
		{"flipped byte xz", "xz", flip(60), nil},
		{"flipped byte zstd", "zstd", flip(30), nil},
		{"truncated none", "none", func(b []byte) []byte { return b[:len(b)-9] }, nil},
		{"truncated zstd", "zstd", func(b []byte) []byte { return b[:len(b)/2] }, nil},
		{"truncated xz", "xz", func(b []byte) []byte { return b[:len(b)/2] }, nil},
		{"trailing data", "none", func(b []byte) []byte { return append(b, make([]byte, 8)...) }, nil},
		{"empty", "xz", func([]byte) []byte { return nil }, nil},
		{"NAR missing", "none", nil, func(s string) string { return strings.Replace(s, "URL: nar/", "URL: nar/x", 1) }},
		{"wrong compression", "xz", nil, func(s string) string { return strings.Replace(s, "Compression: xz", "Compression: zstd", 1) }},
		// FileHash is not signed; the NAR is intact.
		{"wrong FileHash zstd", "zstd", nil, func(s string) string {
			return replaceLine(s, "FileHash: ", "FileHash: sha256:"+nixbase32.EncodeToString(make([]byte, 32)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Input-addressed and signed: only the hashes stand between
			// the tampering and the cache store.
			p := iaPath(t, "victim", testNAR(t, strings.Repeat("payload ", 40)))
			writeCache(t, dir, tc.compression, []cachePath{p}, key)
			if tc.nar != nil {
				corruptNAR(t, dir, tc.nar)
			}
			if tc.narinfo != nil {
				editNarinfo(t, dir, p, tc.narinfo)
			}
			s, cache, lc := openTest(t, "nix+file://"+dir+"?trusted-public-keys="+key.public().String())
			_, err := s.GetPathInfo(context.Background(), p.sp.Digest)
			if err == nil {
				t.Fatal("a tampered NAR was served")
			}
			if errors.Is(err, storeclient.ErrNotFound) {
				t.Fatalf("error %v should not mean not found", err)
			}
			// A file that is complete as the cache serves it but ends
			// early is damaged data, unlike a download cut short
			// (TestTruncatedDownload).
			if strings.HasPrefix(tc.name, "truncated") && !errors.Is(err, storeclient.ErrCorrupt) {
				t.Fatalf("error %v should mean corrupt data", err)
			}
			if n := pathInfos(t, cache); n != 0 {
				t.Fatalf("the cache store holds %d PathInfos after a failed fetch", n)
			}
			if lc.count("binary cache: fetch failed") != 1 {
				t.Errorf("want one 'fetch failed' log line, got %v", lc.msgs)
			}
			t.Log(err)
		})
	}
}

func TestBadNarinfo(t *testing.T) {
	key := newTestKey(t, "k-1")
	p := iaPath(t, "victim", testNAR(t, "x"))
	other := iaPath(t, "other", testNAR(t, "y"))
	for _, tc := range []struct {
		name string
		edit func(string) string
	}{
		{"garbage", func(string) string { return "this is not a narinfo" }},
		{"unknown key", func(s string) string { return s + "Frobnicate: yes\n" }},
		{"other hash", func(s string) string { return strings.Replace(s, p.sp.Digest.String(), other.sp.Digest.String(), 1) }},
		{"bad NarHash", func(s string) string { return strings.Replace(s, "NarHash: sha256:", "NarHash: sha256:zz", 1) }},
		{"md5 NarHash", func(s string) string {
			return replaceLine(s, "NarHash: ", "NarHash: md5:00000000000000000000000000000000")
		}},
		{"no NarSize", func(s string) string { return replaceLine(s, "NarSize: ", "") }},
		{"huge NarSize", func(s string) string { return replaceLine(s, "NarSize: ", "NarSize: 99999999999999999999999") }},
		{"absolute URL", func(s string) string { return replaceLine(s, "URL: ", "URL: /etc/passwd") }},
		{"escaping URL", func(s string) string { return replaceLine(s, "URL: ", "URL: nar/../../../etc/passwd") }},
		{"brotli", func(s string) string { return replaceLine(s, "Compression: ", "Compression: br") }},
		{"bad reference", func(s string) string { return replaceLine(s, "References: ", "References: not-a-path") }},
		{"bad signature", func(s string) string { return replaceLine(s, "Sig: ", "Sig: k-1:!!!") }},
		{"bad CA", func(s string) string { return s + "CA: fixed:r:sha256:nothex\n" }},
		{"NUL", func(s string) string { return s + "\x00" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, "none", []cachePath{p}, key)
			editNarinfo(t, dir, p, tc.edit)
			s, cache, _ := openTest(t, "nix+file://"+dir+"?trusted-public-keys="+key.public().String())
			_, err := s.GetPathInfo(context.Background(), p.sp.Digest)
			if err == nil || errors.Is(err, storeclient.ErrNotFound) {
				t.Fatalf("GetPathInfo: %v, want a corrupt-narinfo error", err)
			}
			if !errors.Is(err, storeclient.ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
			if n := pathInfos(t, cache); n != 0 {
				t.Fatalf("the cache store holds %d PathInfos", n)
			}
		})
	}
}

func replaceLine(s, prefix, repl string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = repl
		}
	}
	return strings.Join(lines, "\n")
}

func TestMissingAndNegativeCache(t *testing.T) {
	f := newFixture(t, "none")
	var narinfoGets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".narinfo") {
			narinfoGets.Add(1)
		}
		http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	missing := iaPath(t, "missing", nil).sp.Digest
	for _, tc := range []struct {
		param string
		want  int64
	}{{"", 1}, {"&negative-ttl=0", 2}} {
		narinfoGets.Store(0)
		s, _, _ := openTest(t, "nix+"+srv.URL+"?trusted-public-keys="+f.key.public().String()+tc.param)
		for range 2 {
			if _, err := s.GetPathInfo(context.Background(), missing); !errors.Is(err, storeclient.ErrNotFound) {
				t.Fatalf("GetPathInfo of a missing path: %v", err)
			}
		}
		if got := narinfoGets.Load(); got != tc.want {
			t.Errorf("%q: %d narinfo requests for two lookups, want %d", tc.param, got, tc.want)
		}
	}
}

func TestConcurrentLookupsFetchOnce(t *testing.T) {
	f := newFixture(t, "zstd")
	var narinfoGets, narGets atomic.Int64
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, ".narinfo"):
			narinfoGets.Add(1)
		case strings.HasPrefix(r.URL.Path, "/nar/"):
			narGets.Add(1)
			select { // hold the fetch open until every lookup has joined it
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	s, _, _ := openTest(t, "nix+"+srv.URL+"?trusted-public-keys="+f.key.public().String())
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := s.GetPathInfo(context.Background(), f.ia.sp.Digest)
			errs <- err
		})
	}
	for joined := 0; joined < n; {
		s.mu.Lock()
		if fl, ok := s.flights[f.ia.sp.Digest]; ok {
			joined = fl.joined
		}
		s.mu.Unlock()
		if joined < n {
			runtime.Gosched()
		}
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if narinfoGets.Load() != 1 || narGets.Load() != 1 {
		t.Fatalf("%d lookups made %d narinfo and %d NAR requests, want 1 and 1", n, narinfoGets.Load(), narGets.Load())
	}
	checkServed(t, s, f.ia)
}

package binarycache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/memory"
)

func TestRetries(t *testing.T) {
	f := newFixture(t, "xz")
	var fails atomic.Int64
	fails.Store(2)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if fails.Add(-1) >= 0 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	// The first two requests (nix-cache-info, then a retry) fail.
	s, _, lc := openTest(t, "nix+"+srv.URL+"?trusted-public-keys="+f.key.public().String())
	checkServed(t, s, f.ia)
	if n := lc.count("binary cache: retrying"); n != 2 {
		t.Errorf("%d retries logged, want 2", n)
	}

	// Too many failures: a clear error, no PathInfo.
	fails.Store(1000)
	if err := openErr(t, "nix+"+srv.URL+"?retries=1"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("open against a failing server: %v, want an error naming the status", err)
	}
}

// openErr opens a Store that is expected to fail to open, and returns the
// error.
func openErr(t *testing.T, rawURL string) error {
	t.Helper()
	cfg, err := ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), cfg, Options{Cache: memory.New()})
	if err == nil {
		s.Close()
	}
	return err
}

func TestStoreDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /gnu/store\n"), 0o644)
	err := openErr(t, "nix+file://"+dir)
	if err == nil || !strings.Contains(err.Error(), `"/gnu/store"`) {
		t.Fatalf("open of a /gnu/store cache: %v", err)
	}
}

func TestMissingDirectory(t *testing.T) {
	if err := openErr(t, "nix+file://"+t.TempDir()+"/nonexistent"); err == nil {
		t.Fatal("a nonexistent cache directory was accepted")
	}
}

func TestBasicAuthNetrc(t *testing.T) {
	f := newFixture(t, "none")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="cache"`)
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	netrc := filepath.Join(t.TempDir(), "netrc")
	t.Setenv("NETRC", netrc)
	if err := openErr(t, "nix+"+srv.URL); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "netrc") {
		t.Fatalf("open without credentials: %v", err)
	}
	os.WriteFile(netrc, []byte("machine other.example login bob password nope\n# comment\nmachine 127.0.0.1\n  login alice\n  password s3cret\n"), 0o600)
	s, _, _ := openTest(t, "nix+"+srv.URL+"?trusted-public-keys="+f.key.public().String())
	checkServed(t, s, f.ia)
}

func TestHostileServer(t *testing.T) {
	f := newFixture(t, "none")
	t.Run("endless NAR", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/nar/") {
				nar, _ := os.ReadFile(filepath.Join(f.dir, r.URL.Path))
				w.Write(nar)
				junk := make([]byte, 1<<16)
				for r.Context().Err() == nil {
					if _, err := w.Write(junk); err != nil {
						return
					}
				}
				return
			}
			http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
		}))
		defer srv.Close()
		s, cache, _ := openTest(t, "nix+"+srv.URL+"?trusted-public-keys="+f.key.public().String())
		_, err := s.GetPathInfo(context.Background(), f.ia.sp.Digest)
		if !errors.Is(err, storeclient.ErrCorrupt) {
			t.Fatalf("endless NAR: %v, want a corrupt-data error", err)
		}
		if pathInfos(t, cache) != 0 {
			t.Fatal("PathInfo stored")
		}
	})
	t.Run("stalled body", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/nar/") {
				w.WriteHeader(http.StatusOK)
				w.Write([]byte("\x0d\x00\x00\x00"))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
		}))
		defer srv.Close()
		s, _, _ := openTest(t, "nix+"+srv.URL+"?timeout=200ms&trusted-public-keys="+f.key.public().String())
		_, err := s.GetPathInfo(context.Background(), f.ia.sp.Digest)
		if !errors.Is(err, errStalled) {
			t.Fatalf("stalled NAR: %v, want a stall error", err)
		}
	})
}

// TestTruncatedDownload checks that a NAR download the network cuts short
// (fewer bytes than its Content-Length, which the HTTP client reports as
// io.ErrUnexpectedEOF) is reported as that failure, not as corrupt data,
// whether the NAR is compressed or not.
func TestTruncatedDownload(t *testing.T) {
	for _, compression := range []string{"none", "xz", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			f := newFixture(t, compression)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/nar/") {
					b, err := os.ReadFile(filepath.Join(f.dir, strings.TrimPrefix(r.URL.Path, "/")))
					if err != nil {
						http.Error(w, err.Error(), http.StatusNotFound)
						return
					}
					w.Header().Set("Content-Length", strconv.Itoa(len(b)))
					w.Write(b[:len(b)/2]) // the server then closes the connection
					return
				}
				http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
			}))
			defer srv.Close()
			s, cache, _ := openTest(t, "nix+"+srv.URL+"?retries=0&trusted-public-keys="+f.key.public().String())
			_, err := s.GetPathInfo(context.Background(), f.ia.sp.Digest)
			if err == nil {
				t.Fatal("a path whose download was cut short was served")
			}
			if errors.Is(err, storeclient.ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v; want the download's unexpected EOF, not corrupt data", err)
			}
			if n := pathInfos(t, cache); n != 0 {
				t.Fatalf("the cache store holds %d PathInfos after a failed fetch", n)
			}
		})
	}
}

package binarycache

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/storeclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseURL(t *testing.T) {
	const key = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	cfg, err := ParseURL("nix+https://user:pw@cache.example.org/sub/?trusted-public-keys=" + key + "%20other-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=&cache=local:/var/cache/x&negative-ttl=0&retries=5&timeout=2m")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BaseURL.Scheme != "https" || cfg.BaseURL.Path != "/sub" || len(cfg.TrustedKeys) != 2 || cfg.TrustedKeys[0].String() != key ||
		cfg.CacheURL != "local:/var/cache/x" || cfg.NegativeTTL != 0 || cfg.Retries != 5 || cfg.Timeout != 2*time.Minute {
		t.Errorf("parsed %+v", cfg)
	}
	if strings.Contains(cfg.String(), "pw") {
		t.Errorf("String() %q shows the password", cfg)
	}
	d, err := ParseURL("file:///srv/cache/")
	if err != nil || d.BaseURL.Path != "/srv/cache" || d.CacheURL != DefaultCacheURL || d.NegativeTTL != DefaultNegativeTTL {
		t.Errorf("defaults: %+v, %v", d, err)
	}
	for _, bad := range []string{
		"nix+ftp://host",
		"nix+file://relative/dir",
		"nix+file://host/dir",
		"nix+http://",
		"nix+file:///d?trusted-public-keys=nocolon",
		"nix+file:///d?trusted-public-keys=k:c2hvcnQ=",
		"nix+file:///d?trusted-public-keys=",
		"nix+file:///d?cache=",
		"nix+file:///d?negative-ttl=soon",
		"nix+file:///d?retries=-1",
		"nix+file:///d?timeout=0",
		"nix+file:///d?priority=10",
		"nix+file:///d#frag",
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func TestParseNetrc(t *testing.T) {
	const text = `
machine a.example login alice password pa
# a comment line
default login anon password pd
macdef init
machine a.example login evil password evil

machine b.example
  login bob
  password pb
`
	for host, want := range map[string]*credentials{
		"a.example": {"alice", "pa"},
		"b.example": {"bob", "pb"},
		"B.EXAMPLE": {"bob", "pb"},
		"c.example": {"anon", "pd"},
	} {
		got, err := parseNetrc(text, host)
		if err != nil || got == nil || *got != *want {
			t.Errorf("%s: %+v, %v; want %+v", host, got, err, want)
		}
	}
	if got, err := parseNetrc("machine x login y password z", "other"); err != nil || got != nil {
		t.Errorf("no match: %+v, %v", got, err)
	}
	if _, err := parseNetrc("machine x login", "x"); err == nil {
		t.Error("a dangling token was accepted")
	}
}

func TestCheckCAPath(t *testing.T) {
	// nix-store --add of a file "hello" containing "Hello World!"
	// (vectors.md) is /nix/store/n4hss129xrln71w0nss39bcx6hzsh9bg-hello.
	sp, err := storeclient.ParseStorePath("/nix/store/n4hss129xrln71w0nss39bcx6hzsh9bg-hello")
	if err != nil {
		t.Fatal(err)
	}
	// Its NAR sha256 (vectors.md), in hex.
	narHash := "sha256:03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040"
	ca, err := ParseContentAddress("fixed:r:" + narHash)
	if err != nil {
		t.Fatal(err)
	}
	p := &storeclient.PathInfo{StorePath: sp, CA: ca}
	copy(p.NarSHA256[:], ca.Digest)
	if err := checkCAPath(p); err != nil {
		t.Fatalf("the nix-store --add vector: %v", err)
	}
	p.StorePath.Name = "renamed"
	if err := checkCAPath(p); err == nil {
		t.Error("a renamed CA path passed")
	}
	for _, bad := range []string{"fixed:r:sha256:xyz", "sideways:sha256:abc", "text:sha1:0000000000000000000000000000000000000000", "fixed:r:nohash"} {
		if _, err := ParseContentAddress(bad); err == nil {
			t.Errorf("ParseContentAddress(%q) accepted", bad)
		}
	}
}

func FuzzParseNarInfo(f *testing.F) {
	f.Add([]byte("StorePath: /nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x\nURL: nar/a.nar.xz\nCompression: xz\nNarHash: sha256:1fyav7jdh6ipd5hqrffnh0vc9mqsm4dmbvxgkqpi6a3j5xdsmb7c\nNarSize: 8\nReferences: \nCA: fixed:r:sha256:1fyav7jdh6ipd5hqrffnh0vc9mqsm4dmbvxgkqpi6a3j5xdsmb7c\n"))
	f.Add([]byte("StorePath: x\nSig: a:b\n"))
	want, _ := storeclient.ParseStorePath("/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x")
	f.Fuzz(func(t *testing.T, b []byte) {
		ni, err := ParseNarInfo(b, want.Digest)
		if err != nil {
			return
		}
		if ni.Info.StorePath.Digest != want.Digest || strings.HasPrefix(ni.URL, "/") || strings.HasPrefix(ni.URL, "..") {
			t.Fatalf("accepted %q as %+v", b, ni)
		}
		if ni.Info.CA != nil {
			_ = checkCAPath(ni.Info)
		}
	})
}

package binarycache

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of the URL parameters.
const (
	DefaultCacheURL    = "memory:"
	DefaultNegativeTTL = 5 * time.Minute
	DefaultRetries     = 3
	DefaultTimeout     = 30 * time.Second
)

// Config is a parsed binary cache URL:
//
//	nix+file:///DIR[?PARAMS]
//	nix+http://HOST[:PORT][/PATH][?PARAMS]
//	nix+https://HOST[:PORT][/PATH][?PARAMS]
//
// with PARAMS (all optional, '&'-separated):
//
//	trusted-public-keys=NAME:KEY[%20NAME2:KEY2]  keys to verify signatures with;
//	                                             ' ' (%20) or ',' separate keys, '+' is literal
//	cache=STORE_URL       where fetched paths are kept (default memory:), e.g. local:/var/cache/storefs
//	negative-ttl=DURATION how long a missing narinfo is remembered (default 5m; 0 disables)
//	retries=N             retries of a failed HTTP request (5xx, 429, timeouts) (default 3)
//	timeout=DURATION      connect / response header / body stall timeout (default 30s)
//
// Plain file://, http:// and https:// URLs (as Nix writes them) are
// accepted by ParseURL too; the storeurl package only routes the nix+
// forms here, since a bare file:// is no storefs store.
type Config struct {
	// BaseURL is the cache's location without the nix+ prefix and the
	// parameters: file:///DIR or http(s)://HOST/PATH.
	BaseURL *url.URL
	// TrustedKeys verify narinfo signatures. Empty: signatures are not
	// checked (every path is accepted; a warning is logged once).
	TrustedKeys []PublicKey
	// CacheURL is the store URL of the local cache store.
	CacheURL string
	// NegativeTTL is how long a narinfo the cache does not have is not
	// asked for again. Zero disables negative caching.
	NegativeTTL time.Duration
	// Retries is how many times a failed HTTP request is retried.
	Retries int
	// Timeout bounds connecting, waiting for response headers, and each
	// pause in a response body.
	Timeout time.Duration
}

// ParseURL parses a binary cache URL. Unknown parameters are an error
// naming them.
func ParseURL(raw string) (*Config, error) {
	base, query, _ := strings.Cut(raw, "?")
	base = strings.TrimPrefix(base, "nix+")
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("binary cache URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("binary cache URL %q: a file URL needs an absolute path (file:///DIR), not host %q", raw, u.Host)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("binary cache URL %q: a file URL needs an absolute path (file:///DIR)", raw)
		}
		u.Host = ""
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("binary cache URL %q: no host", raw)
		}
	default:
		return nil, fmt.Errorf("binary cache URL %q: scheme %q is not file, http or https", raw, u.Scheme)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("binary cache URL %q: fragments (#) are not allowed", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	c := &Config{
		BaseURL:     u,
		CacheURL:    DefaultCacheURL,
		NegativeTTL: DefaultNegativeTTL,
		Retries:     DefaultRetries,
		Timeout:     DefaultTimeout,
	}
	if query == "" {
		return c, nil
	}
	for kv := range strings.SplitSeq(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		// PathUnescape keeps '+' (common in base64 keys) as '+'.
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("binary cache URL %q: parameter %s: %w", raw, k, err)
		}
		switch k {
		case "trusted-public-keys":
			keys, err := ParsePublicKeys(val)
			if err != nil {
				return nil, fmt.Errorf("binary cache URL %q: %w", raw, err)
			}
			c.TrustedKeys = append(c.TrustedKeys, keys...)
		case "cache":
			if val == "" {
				return nil, fmt.Errorf("binary cache URL %q: cache= needs a store URL such as local:/var/cache/storefs", raw)
			}
			c.CacheURL = val
		case "negative-ttl":
			d, err := parseDuration(val)
			if err != nil {
				return nil, fmt.Errorf("binary cache URL %q: negative-ttl: %w", raw, err)
			}
			c.NegativeTTL = d
		case "timeout":
			d, err := parseDuration(val)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("binary cache URL %q: timeout must be a positive duration such as 30s, not %q", raw, val)
			}
			c.Timeout = d
		case "retries":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > 100 {
				return nil, fmt.Errorf("binary cache URL %q: retries must be 0-100, not %q", raw, val)
			}
			c.Retries = n
		default:
			return nil, fmt.Errorf("binary cache URL %q: unknown parameter %q (known: trusted-public-keys, cache, negative-ttl, retries, timeout)", raw, k)
		}
	}
	return c, nil
}

// parseDuration accepts a Go duration ("90s", "5m") or a number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 90s or 5m", s)
	}
	return d, nil
}

// String returns the cache's location without parameters (keys are
// public, but the URL is for logs and errors).
func (c *Config) String() string { return c.BaseURL.Redacted() }

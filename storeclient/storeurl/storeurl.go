// Package storeurl opens a store from its URL (cli.md "Store URLs").
//
//	memory:            an empty in-memory store
//	local:DIR, DIR     the embedded on-disk store in DIR
//	grpc+http://HOST:PORT, grpc+https://HOST[:PORT], grpc+unix:///PATH
//	                   a tvix/snix (or storefs) store daemon, see grpcstore
//	cache:FAST|SLOW    FAST (memory: or local:DIR) filled from SLOW, see cache
//
// docs/store-urls.md lists every form with examples.
package storeurl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/binarycache"
	"github.com/storefs/storefs/storeclient/cache"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/memory"
)

// Options says how a store is opened.
type Options struct {
	// ReadOnly opens the store for reading only. Several read-only openers
	// of one local store may run at once; a writer excludes them.
	ReadOnly bool
	// CachedWrites opens a local store with local.Options.CachedWrites:
	// for the stores that reads fill (the cache store of a binary cache,
	// the fast store of cache:), whose blobs are read right after they are
	// written.
	CachedWrites bool
	// VerifyOnOpen opens a local store with local.Options.VerifyOnOpen:
	// each blob is hashed in full at its first open by this process.
	VerifyOnOpen bool
}

// DefaultLocalDir returns where the embedded store lives when no --store
// is given: $XDG_DATA_HOME/storefs, else ~/.local/share/storefs.
func DefaultLocalDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "storefs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the default store: %w (set --store or XDG_DATA_HOME)", err)
	}
	return filepath.Join(home, ".local", "share", "storefs"), nil
}

// Open opens the store named by rawURL. An empty rawURL means the default
// local store.
func Open(ctx context.Context, rawURL string, opts Options) (storeclient.Store, error) {
	if rawURL == "" {
		dir, err := DefaultLocalDir()
		if err != nil {
			return nil, err
		}
		return openLocal(ctx, dir, opts)
	}
	scheme, rest, hasScheme := strings.Cut(rawURL, ":")
	if !hasScheme || strings.HasPrefix(rawURL, "/") || strings.HasPrefix(rawURL, ".") {
		return openLocal(ctx, rawURL, opts)
	}
	switch scheme {
	case "memory":
		if rest != "" {
			return nil, fmt.Errorf("store URL %q: memory: takes no arguments", rawURL)
		}
		return memory.New(), nil
	case "local":
		if rest == "" {
			return nil, fmt.Errorf("store URL %q: local: needs a directory, e.g. local:/var/lib/storefs", rawURL)
		}
		return openLocal(ctx, rest, opts)
	case "nix+file", "nix+http", "nix+https":
		// The cache store is written by lookups, so it is opened
		// read-write even for a read-only caller.
		return binarycache.OpenURL(ctx, rawURL, func(ctx context.Context, u string) (storeclient.Store, error) {
			return Open(ctx, u, Options{CachedWrites: true})
		})
	case "grpc+http", "grpc+https", "grpc+unix":
		s, err := grpcstore.Open(rawURL, grpcstore.Options{})
		if err != nil {
			return nil, err
		}
		return s, nil
	case "cache":
		return openCache(ctx, rawURL, rest, opts)
	}
	return nil, fmt.Errorf("store URL %q: unknown scheme %q (want local:, memory:, nix+file:, nix+http(s):, grpc+http(s):, grpc+unix:, cache:)", rawURL, scheme)
}

// openCache opens cache:FAST|SLOW. The fast store is filled by reads, so
// it is opened read-write even for a read-only caller.
func openCache(ctx context.Context, rawURL, rest string, opts Options) (storeclient.Store, error) {
	fastURL, slowURL, ok := strings.Cut(rest, "|")
	if !ok || fastURL == "" || slowURL == "" {
		return nil, fmt.Errorf("store URL %q: want cache:FAST_URL|SLOW_URL, e.g. cache:memory:|grpc+http://127.0.0.1:8000", rawURL)
	}
	fast, err := Open(ctx, fastURL, Options{CachedWrites: true})
	if err != nil {
		return nil, fmt.Errorf("store URL %q: fast store: %w", rawURL, err)
	}
	slow, err := Open(ctx, slowURL, opts)
	if err != nil {
		fast.Close()
		return nil, fmt.Errorf("store URL %q: slow store: %w", rawURL, err)
	}
	return cache.New(fast, slow, nil), nil
}

func openLocal(ctx context.Context, dir string, opts Options) (storeclient.Store, error) {
	s, err := local.Open(ctx, dir, local.Options{ReadOnly: opts.ReadOnly, CachedWrites: opts.CachedWrites, VerifyOnOpen: opts.VerifyOnOpen})
	if err != nil {
		return nil, err
	}
	return s, nil
}

package storeurl_test

import (
	"context"
	"testing"

	"github.com/storefs/storefs/storeclient/cache"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/storeurl"
)

func TestOpenGRPCAndCache(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		want string // "grpc", "cache" or "" for an error
	}{
		{"grpc+http://127.0.0.1:1", "grpc"},
		{"grpc+http://127.0.0.1:1?package=tvix&timeout=5s", "grpc"},
		{"grpc+https://store.example", "grpc"},
		{"grpc+unix:///run/snix/store.sock", "grpc"},
		{"grpc+http://127.0.0.1", ""},              // no port
		{"grpc+unix://host/sock", ""},              // host in a unix URL
		{"grpc+http://127.0.0.1:1?package=x", ""},  // unknown package
		{"grpc+http://127.0.0.1:1?color=blue", ""}, // unknown parameter
		{"cache:memory:|grpc+http://127.0.0.1:1", "cache"},
		{"cache:memory:|cache:memory:|memory:", "cache"},
		{"cache:memory:", ""},
		{"cache:|memory:", ""},
		{"cache:memory:|bogus:x", ""},
	} {
		s, err := storeurl.Open(ctx, tc.url, storeurl.Options{})
		if tc.want == "" {
			if err == nil {
				s.Close()
				t.Errorf("Open(%q) succeeded, want an error", tc.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
			continue
		}
		var ok bool
		switch tc.want {
		case "grpc":
			_, ok = s.(*grpcstore.Store)
		case "cache":
			_, ok = s.(*cache.Store)
		}
		if !ok {
			t.Errorf("Open(%q) = %T, want a %s store", tc.url, s, tc.want)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close(%q): %v", tc.url, err)
		}
	}
}

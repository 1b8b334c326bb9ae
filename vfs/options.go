package vfs

import (
	"log/slog"
	"time"
)

// Defaults for the zero fields of Options.
const (
	DefaultDirectoryCacheSize    = 10000
	DefaultVerifiedBlobCacheSize = 100000
	DefaultTimeout               = 30 * time.Second
)

// Options configure an FS. The zero value is the documented default of
// every option (docs/filesystem.md, docs/config.md).
type Options struct {
	// ListRoot allows listing the root directory (config list_root).
	// Default false: reading the root fails with EPERM; lookups by name
	// always work.
	ListRoot bool

	// NoXAttrs turns extended attributes off (config xattrs: false). By
	// default directories and regular files carry their digest in
	// user.snix.castore.directory.digest / user.snix.castore.blob.digest.
	NoXAttrs bool

	// UID and GID own every node (config owner). Default 0 / 0.
	UID, GID uint32

	// DirectoryCacheSize is how many Directories are kept in memory, least
	// recently used dropped first. Default DefaultDirectoryCacheSize.
	DirectoryCacheSize int

	// VerifiedBlobCacheSize is how many blob digests are remembered as
	// verified (32 bytes each, plus LRU overhead), so a blob from an
	// untrusted store is hashed once rather than on every open. Default
	// DefaultVerifiedBlobCacheSize.
	VerifiedBlobCacheSize int

	// Timeout bounds every backend call (and every blob read from an
	// untrusted store). A call that takes longer fails with EIO. Default
	// DefaultTimeout.
	Timeout time.Duration

	// LegacySizes also accepts child Directory sizes recorded under the
	// pre-2024-08 rule (1 per entry instead of 2). Default false.
	LegacySizes bool

	// Logger receives one line per integrity failure (with the digest).
	// Default slog.Default().
	Logger *slog.Logger

	// Observer, if set, is told about every operation, cache lookup and
	// backend call (metrics). Default nil: nothing is reported.
	Observer Observer
}

func (o Options) withDefaults() Options {
	if o.DirectoryCacheSize <= 0 {
		o.DirectoryCacheSize = DefaultDirectoryCacheSize
	}
	if o.VerifiedBlobCacheSize <= 0 {
		o.VerifiedBlobCacheSize = DefaultVerifiedBlobCacheSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

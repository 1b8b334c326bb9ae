package vfs

import (
	"log/slog"
	"os"
	"time"
)

// Defaults for the zero fields of Options.
const (
	DefaultDirectoryCacheSize = 10000
	DefaultRemoteCacheBytes   = 64 << 20
	DefaultSpoolSize          = 4 << 30
	DefaultTimeout            = 30 * time.Second
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

	// RemoteCacheBytes bounds the memory that keeps the bao outboards and
	// the verified chunk groups of blobs from stores that are not trusted
	// local data, shared by every File (config cache.remote_memory).
	// Default DefaultRemoteCacheBytes.
	RemoteCacheBytes int64

	// SpoolDir is where remote blobs that come without a bao outboard are
	// kept, whole and verified, while they are read (config
	// store.spool_dir). The files are unlinked at once. Default
	// os.TempDir().
	SpoolDir string

	// SpoolSize bounds the bytes in SpoolDir (config store.spool_size). A
	// blob that does not fit beside the blobs open files hold cannot be
	// opened (EIO). Default DefaultSpoolSize.
	SpoolSize int64

	// StoreName names the store in log lines (its URL). Default: its Go
	// type.
	StoreName string

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
	if o.RemoteCacheBytes <= 0 {
		o.RemoteCacheBytes = DefaultRemoteCacheBytes
	}
	if o.SpoolDir == "" {
		o.SpoolDir = os.TempDir()
	}
	if o.SpoolSize <= 0 {
		o.SpoolSize = DefaultSpoolSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Package config is the daemon's configuration (spec cli.md, docs/config.md):
// the YAML schema as Go structs with their defaults, loaded from a file,
// STOREFS_* environment variables and command-line flags (in increasing
// precedence) and checked strictly: an unknown key, a value of the wrong
// type, an invalid address or network, or two frontends on one port is one
// error naming the key and where it was set (file:line, env VAR or flag).
//
// Load reads a configuration; Config.YAML prints it (storefs serve
// --print-config). The zero value of a section means "off" for frontends: a
// frontend runs when its listen address (or, for FUSE, a mountpoint) is set.
package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration. Field tags are the YAML keys.
type Config struct {
	// Store says which store is served.
	Store Store `yaml:"store"`
	// Scrub re-hashes the embedded store's blobs in the background.
	Scrub Scrub `yaml:"scrub"`
	// ListRoot allows listing the root directory (EPERM otherwise).
	ListRoot bool `yaml:"list_root"`
	// XAttrs serves the digest extended attributes.
	XAttrs bool `yaml:"xattrs"`
	// Owner owns every node.
	Owner Owner `yaml:"owner"`
	// FUSE lists the FUSE mounts (Linux).
	FUSE []FUSEMount `yaml:"fuse"`
	// NFS is the NFSv3 server.
	NFS NFS `yaml:"nfs"`
	// NineP is the 9P2000.L server.
	NineP NineP `yaml:"ninep"`
	// VirtioFS is the vhost-user-fs back-end for virtual machines.
	VirtioFS VirtioFS `yaml:"virtiofs"`
	// GRPC is the tvix/snix gRPC store server.
	GRPC GRPC `yaml:"grpc"`
	// Metrics is the Prometheus and health endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Log says how the daemon logs.
	Log Log `yaml:"log"`
	// Cache sizes the in-memory caches.
	Cache Cache `yaml:"cache"`
	// Timeouts bound backend calls and shutdown.
	Timeouts Timeouts `yaml:"timeouts"`
}

// Store names the store.
type Store struct {
	// URL is a store URL (local:DIR, memory:, nix+https://…); "" is the
	// embedded store in $XDG_DATA_HOME/storefs.
	URL string `yaml:"url"`
	// VerifyOnOpen hashes each blob of an embedded (local) store in full at
	// its first open by the daemon.
	VerifyOnOpen bool `yaml:"verify_on_open"`
	// SpoolDir holds remote blobs that come without a bao outboard while
	// they are read; "" is the system's temporary directory.
	SpoolDir string `yaml:"spool_dir"`
	// SpoolSize bounds the bytes in SpoolDir. Reloaded on SIGHUP.
	SpoolSize int64 `yaml:"spool_size"`
}

// Scrub configures the background scrubber of an embedded (local) store.
type Scrub struct {
	// Enabled runs the scrubber.
	Enabled bool `yaml:"enabled"`
	// BytesPerSecond bounds how fast it reads.
	BytesPerSecond int64 `yaml:"bytes_per_second"`
	// Interval is the pause between two passes.
	Interval Duration `yaml:"interval"`
	// StartDelay is the wait before the first pass.
	StartDelay Duration `yaml:"start_delay"`
}

// Owner is the uid and gid every node shows.
type Owner struct {
	UID uint32 `yaml:"uid"`
	GID uint32 `yaml:"gid"`
}

// FUSEMount is one FUSE mount.
type FUSEMount struct {
	// Mountpoint is the directory to mount on (made absolute at load).
	Mountpoint string `yaml:"mountpoint"`
	// AllowOther lets users other than the daemon's use the mount.
	AllowOther bool `yaml:"allow_other"`
}

// NFS configures the NFSv3 server (MOUNT and NFS on one TCP port).
type NFS struct {
	// Listen is HOST:PORT; "" turns NFS off. A host that is not loopback
	// needs AllowedNetworks.
	Listen string `yaml:"listen"`
	// AllowedNetworks are the client networks (CIDR or single address)
	// that may connect besides loopback. Reloaded on SIGHUP.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// RequireSecurePort refuses clients on source ports ≥ 1024 (export
	// option "secure").
	RequireSecurePort bool `yaml:"require_secure_port"`
	// MaxRead is the largest READ answered, in bytes (export rsize).
	MaxRead uint32 `yaml:"max_read"`
	// MaxConnections bounds the open client connections.
	MaxConnections int `yaml:"max_connections"`
}

// NineP configures the 9P2000.L server.
type NineP struct {
	// Listen is HOST:PORT or unix:PATH; "" turns 9P off. A host that is not
	// loopback needs AllowedNetworks.
	Listen string `yaml:"listen"`
	// Msize is the largest message size granted (4 KiB to 4 MiB).
	Msize uint32 `yaml:"msize"`
	// AllowedNetworks are the client networks that may connect besides
	// loopback.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxConnections bounds the open client connections.
	MaxConnections int `yaml:"max_connections"`
	// MaxFids bounds the fids one connection holds.
	MaxFids int `yaml:"max_fids"`
	// MaxServerFids bounds the fids of all connections together.
	MaxServerFids int `yaml:"max_server_fids"`
}

// VirtioFS configures the virtio-fs (vhost-user-fs) back-end that QEMU,
// cloud-hypervisor or crosvm connect to.
type VirtioFS struct {
	// Socket is the unix socket path the VMM connects to; "" turns
	// virtio-fs off.
	Socket string `yaml:"socket"`
	// Tag is the name the guest mounts; the VMM announces it, the daemon
	// only logs and prints it.
	Tag string `yaml:"tag"`
}

// GRPC configures the gRPC store server.
type GRPC struct {
	// Listen is HOST:PORT or unix:PATH; "" turns it off.
	Listen string `yaml:"listen"`
	// AllowedNetworks are the client networks that may connect besides
	// loopback. Reloaded on SIGHUP.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxConnections bounds the open client connections.
	MaxConnections int `yaml:"max_connections"`
}

// Metrics configures the HTTP endpoint with /metrics, /healthz, /readyz.
type Metrics struct {
	// Listen is HOST:PORT; "" turns it off.
	Listen string `yaml:"listen"`
	// AllowedNetworks are the client networks that may connect besides
	// loopback.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxConnections bounds the open client connections.
	MaxConnections int `yaml:"max_connections"`
}

// Log configures logging (to stderr).
type Log struct {
	// Level is debug, info, warn or error. Reloaded on SIGHUP.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Cache sizes the caches. Directories and RemoteMemory are reloaded on
// SIGHUP.
type Cache struct {
	// Directories is how many Directories are kept in memory.
	Directories int `yaml:"directories"`
	// RemoteMemory bounds the bytes of bao outboards and verified chunk
	// groups kept for blobs of remote stores.
	RemoteMemory int64 `yaml:"remote_memory"`
	// NFSHandles is how many NFS file handles are remembered.
	NFSHandles int `yaml:"nfs_handles"`
}

// Timeouts bound waits.
type Timeouts struct {
	// Backend bounds every store call; a slower one is EIO.
	Backend Duration `yaml:"backend"`
	// Shutdown bounds how long SIGTERM waits for requests in flight.
	Shutdown Duration `yaml:"shutdown"`
	// Handshake closes a connection to a network frontend (NFS, 9P, gRPC,
	// metrics) that has not completed its first message this long after
	// it connected.
	Handshake Duration `yaml:"handshake"`
	// NFSIdle closes an NFS connection that sends nothing for this long.
	NFSIdle Duration `yaml:"nfs_idle"`
	// NinePIdle closes a 9P connection that sends nothing for this long;
	// 0 never does (Linux's v9fs does not reconnect: an idle mount would
	// break).
	NinePIdle Duration `yaml:"ninep_idle"`
	// GRPCIdle closes a gRPC connection that sends nothing for this long.
	GRPCIdle Duration `yaml:"grpc_idle"`
	// MetricsIdle closes a metrics (HTTP) connection that sends nothing
	// for this long.
	MetricsIdle Duration `yaml:"metrics_idle"`
}

// Duration is a time.Duration written as "30s", "5m" in YAML.
type Duration time.Duration

// MarshalText writes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses "30s", "1m30s" …
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as 30s or 5m, got %q", b)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Defaults of the keys that are not off, zero or empty by default.
const (
	DefaultMsize           = 1 << 20
	DefaultNFSMaxRead      = 1 << 20
	DefaultNFSConnections  = 256
	DefaultNinePConns      = 64
	DefaultNinePFids       = 65536
	DefaultNinePServerFids = 1 << 18
	DefaultGRPCConns       = 64
	DefaultMetricsConns    = 16
	DefaultDirectories     = 10000
	DefaultRemoteMemory    = 64 << 20
	DefaultSpoolSize       = 4 << 30
	DefaultNFSHandles      = 4096
	DefaultBackendTimeout  = 30 * time.Second
	DefaultShutdown        = 10 * time.Second
	DefaultHandshake       = 5 * time.Second
	DefaultNFSIdle         = 5 * time.Minute
	DefaultGRPCIdle        = 5 * time.Minute
	DefaultMetricsIdle     = time.Minute
	DefaultScrubRate       = 8 << 20
	DefaultScrubInterval   = 24 * time.Hour
	DefaultScrubDelay      = 5 * time.Minute
)

// Default returns the configuration with every default filled in: the
// embedded store, no frontend, logging at info in text.
func Default() *Config {
	return &Config{
		Store: Store{SpoolSize: DefaultSpoolSize},
		Scrub: Scrub{
			Enabled:        true,
			BytesPerSecond: DefaultScrubRate,
			Interval:       Duration(DefaultScrubInterval),
			StartDelay:     Duration(DefaultScrubDelay),
		},
		XAttrs: true,
		FUSE:   []FUSEMount{},
		NFS: NFS{
			AllowedNetworks: []string{},
			MaxRead:         DefaultNFSMaxRead,
			MaxConnections:  DefaultNFSConnections,
		},
		NineP: NineP{
			Msize:           DefaultMsize,
			AllowedNetworks: []string{},
			MaxConnections:  DefaultNinePConns,
			MaxFids:         DefaultNinePFids,
			MaxServerFids:   DefaultNinePServerFids,
		},
		VirtioFS: VirtioFS{Tag: "storefs"},
		GRPC:     GRPC{AllowedNetworks: []string{}, MaxConnections: DefaultGRPCConns},
		Metrics:  Metrics{AllowedNetworks: []string{}, MaxConnections: DefaultMetricsConns},
		Log:      Log{Level: "info", Format: "text"},
		Cache: Cache{
			Directories:  DefaultDirectories,
			RemoteMemory: DefaultRemoteMemory,
			NFSHandles:   DefaultNFSHandles,
		},
		Timeouts: Timeouts{
			Backend:     Duration(DefaultBackendTimeout),
			Shutdown:    Duration(DefaultShutdown),
			Handshake:   Duration(DefaultHandshake),
			NFSIdle:     Duration(DefaultNFSIdle),
			GRPCIdle:    Duration(DefaultGRPCIdle),
			MetricsIdle: Duration(DefaultMetricsIdle),
		},
	}
}

// HasFrontend reports whether any frontend is configured.
func (c *Config) HasFrontend() bool {
	return len(c.FUSE) > 0 || c.NFS.Listen != "" || c.NineP.Listen != "" || c.VirtioFS.Socket != "" || c.GRPC.Listen != ""
}

// YAML returns the configuration as YAML, every key present: what
// `storefs serve --print-config` prints.
func (c *Config) YAML() ([]byte, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("config: encode YAML: %w", err)
	}
	return b, nil
}

package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Listen is a parsed listen address: TCP HOST:PORT or a unix socket.
type Listen struct {
	// Unix is the socket path of unix:PATH; empty for TCP.
	Unix string
	// Host is the TCP host: an IP address, "" (every interface) or
	// "localhost".
	Host string
	// Port is the TCP port; 0 picks a free one.
	Port int
}

// ParseListen parses HOST:PORT (HOST an IP address, localhost, or empty for
// every interface) or, when unix is true, unix:PATH.
func ParseListen(addr string, unix bool) (Listen, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !unix {
			return Listen{}, fmt.Errorf("want HOST:PORT, got %q (unix sockets are not supported here)", addr)
		}
		if path == "" {
			return Listen{}, fmt.Errorf("want unix:PATH, got %q", addr)
		}
		return Listen{Unix: path}, nil
	}
	hint := "HOST:PORT such as 127.0.0.1:2049"
	if unix {
		hint += " or unix:PATH"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Listen{}, fmt.Errorf("want %s, got %q", hint, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return Listen{}, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return Listen{}, fmt.Errorf("host %q is not an IP address (want %s)", host, hint)
		}
	}
	return Listen{Host: host, Port: p}, nil
}

// Loopback reports whether l serves only this host: a loopback address,
// localhost, or a unix socket.
func (l Listen) Loopback() bool {
	if l.Unix != "" || l.Host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(l.Host)
	return err == nil && ip.Unmap().IsLoopback()
}

// String returns the address as net.Listen takes it.
func (l Listen) String() string {
	if l.Unix != "" {
		return "unix:" + l.Unix
	}
	return net.JoinHostPort(l.Host, strconv.Itoa(l.Port))
}

// ParseNetworks parses client networks: CIDR prefixes ("10.0.0.0/8") or
// single addresses ("192.0.2.7", taken as /32 or /128).
func ParseNetworks(nets []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(nets))
	for i, s := range nets {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, &indexError{i, fmt.Errorf("%q is not a network in CIDR notation (such as 192.168.0.0/16) or an IP address", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return nil, &indexError{i, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())}
		}
		out = append(out, p)
	}
	return out, nil
}

// indexError is an error about element i of a list.
type indexError struct {
	i   int
	err error
}

func (e *indexError) Error() string { return e.err.Error() }

// listener is one configured listen address, for the port-clash check.
type listener struct {
	key string
	l   Listen
}

// validate checks what types alone cannot, in key order, and makes paths
// absolute.
func (ld *loader) validate(c *Config) error {
	fail := func(key string, format string, args ...any) error {
		return &Error{Where: ld.where(key), Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	networks := func(key string, nets []string) error {
		if _, err := ParseNetworks(nets); err != nil {
			if ie, ok := err.(*indexError); ok {
				return fail(fmt.Sprintf("%s[%d]", key, ie.i), "%v", ie.err)
			}
			return fail(key, "%v", err)
		}
		return nil
	}
	var listeners []listener
	listen := func(section string, addrp *string, unix bool, nets []string) error {
		addr := *addrp
		if err := networks(section+".allowed_networks", nets); err != nil {
			return err
		}
		if addr == "" {
			return nil
		}
		key := section + ".listen"
		l, err := ParseListen(addr, unix)
		if err != nil {
			return fail(key, "%v", err)
		}
		if !l.Loopback() && len(nets) == 0 {
			return fail(key, "%q serves other hosts: set %s.allowed_networks to the client networks allowed (loopback is always allowed)", addr, section)
		}
		if l.Unix != "" && !filepath.IsAbs(l.Unix) {
			abs, err := filepath.Abs(l.Unix)
			if err != nil {
				return fail(key, "%v", err)
			}
			l.Unix = abs
			*addrp = "unix:" + abs
		}
		for _, o := range listeners {
			if clash(o.l, l) {
				return fail(key, "%s is also %s: two frontends cannot share a port or socket", addr, o.key)
			}
		}
		listeners = append(listeners, listener{key, l})
		return nil
	}

	seen := map[string]int{}
	for i := range c.FUSE {
		key := fmt.Sprintf("fuse[%d].mountpoint", i)
		mp := c.FUSE[i].Mountpoint
		if mp == "" {
			return fail(key, "a FUSE mount needs a mountpoint")
		}
		abs, err := filepath.Abs(mp)
		if err != nil {
			return fail(key, "%v", err)
		}
		c.FUSE[i].Mountpoint = abs
		if j, dup := seen[abs]; dup {
			return fail(key, "%s is also fuse[%d].mountpoint", abs, j)
		}
		seen[abs] = i
	}
	if err := listen("nfs", &c.NFS.Listen, false, c.NFS.AllowedNetworks); err != nil {
		return err
	}
	if c.NFS.MaxRead < 4096 || c.NFS.MaxRead > 1<<20 {
		return fail("nfs.max_read", "%d is outside 4096 to 1048576 bytes", c.NFS.MaxRead)
	}
	if c.NFS.MaxConnections <= 0 {
		return fail("nfs.max_connections", "must be at least 1, got %d", c.NFS.MaxConnections)
	}
	if err := listen("ninep", &c.NineP.Listen, true, c.NineP.AllowedNetworks); err != nil {
		return err
	}
	if c.NineP.Msize < 4096 || c.NineP.Msize > 4<<20 {
		return fail("ninep.msize", "%d is outside 4096 to 4194304 bytes", c.NineP.Msize)
	}
	if c.NineP.MaxConnections <= 0 {
		return fail("ninep.max_connections", "must be at least 1, got %d", c.NineP.MaxConnections)
	}
	if c.NineP.MaxFids < 16 {
		return fail("ninep.max_fids", "must be at least 16, got %d", c.NineP.MaxFids)
	}
	if c.NineP.MaxServerFids < c.NineP.MaxFids {
		return fail("ninep.max_server_fids", "must be at least ninep.max_fids (%d), got %d", c.NineP.MaxFids, c.NineP.MaxServerFids)
	}
	if c.VirtioFS.Socket != "" {
		abs, err := filepath.Abs(c.VirtioFS.Socket)
		if err != nil {
			return fail("virtiofs.socket", "%v", err)
		}
		c.VirtioFS.Socket = abs
		l := Listen{Unix: abs}
		for _, o := range listeners {
			if clash(o.l, l) {
				return fail("virtiofs.socket", "%s is also %s: two frontends cannot share a socket", abs, o.key)
			}
		}
		listeners = append(listeners, listener{"virtiofs.socket", l})
	}
	if err := listen("grpc", &c.GRPC.Listen, true, c.GRPC.AllowedNetworks); err != nil {
		return err
	}
	if c.GRPC.MaxConnections <= 0 {
		return fail("grpc.max_connections", "must be at least 1, got %d", c.GRPC.MaxConnections)
	}
	if err := listen("metrics", &c.Metrics.Listen, false, c.Metrics.AllowedNetworks); err != nil {
		return err
	}
	if c.Metrics.MaxConnections <= 0 {
		return fail("metrics.max_connections", "must be at least 1, got %d", c.Metrics.MaxConnections)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fail("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fail("log.format", "want text or json, got %q", c.Log.Format)
	}
	for _, e := range []struct {
		key string
		n   int
	}{{"cache.directories", c.Cache.Directories}, {"cache.nfs_handles", c.Cache.NFSHandles}} {
		if e.n <= 0 {
			return fail(e.key, "must be at least 1, got %d", e.n)
		}
	}
	for _, e := range []struct {
		key string
		d   Duration
	}{
		{"timeouts.backend", c.Timeouts.Backend}, {"timeouts.shutdown", c.Timeouts.Shutdown},
		{"timeouts.handshake", c.Timeouts.Handshake}, {"timeouts.nfs_idle", c.Timeouts.NFSIdle},
		{"timeouts.grpc_idle", c.Timeouts.GRPCIdle}, {"timeouts.metrics_idle", c.Timeouts.MetricsIdle},
	} {
		if e.d <= 0 {
			return fail(e.key, "must be positive, got %s", e.d.Std())
		}
	}
	for _, e := range []struct {
		key string
		n   int64
	}{{"cache.remote_memory", c.Cache.RemoteMemory}, {"store.spool_size", c.Store.SpoolSize}} {
		if e.n < 1<<20 {
			return fail(e.key, "must be at least 1048576 (1 MiB), got %d", e.n)
		}
	}
	if c.Scrub.BytesPerSecond <= 0 {
		return fail("scrub.bytes_per_second", "must be at least 1, got %d", c.Scrub.BytesPerSecond)
	}
	for _, e := range []struct {
		key string
		d   Duration
	}{{"scrub.interval", c.Scrub.Interval}, {"scrub.start_delay", c.Scrub.StartDelay}} {
		if e.d < 0 {
			return fail(e.key, "must not be negative, got %s", e.d.Std())
		}
	}
	if c.Timeouts.NinePIdle < 0 {
		return fail("timeouts.ninep_idle", "must not be negative (0 is off), got %s", c.Timeouts.NinePIdle.Std())
	}
	return nil
}

// clash reports whether two listen addresses would take the same port or
// socket.
func clash(a, b Listen) bool {
	if a.Unix != "" || b.Unix != "" {
		return a.Unix == b.Unix
	}
	if a.Port == 0 || b.Port == 0 || a.Port != b.Port {
		return false
	}
	ha, hb := normHost(a.Host), normHost(b.Host)
	return ha == hb || unspecified(ha) || unspecified(hb)
}

func normHost(h string) string {
	if h == "localhost" {
		return "127.0.0.1"
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().String()
	}
	return h
}

func unspecified(h string) bool {
	if h == "" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsUnspecified()
}

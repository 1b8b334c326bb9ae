package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// clearEnv unsets every STOREFS_ variable for the test, so the developer's
// environment cannot change results.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "STOREFS_") {
			t.Setenv(name, "") // restores it afterwards
			os.Unsetenv(name)
		}
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no default file
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// flags returns a flag set like storefs serve's and the bindings Load needs.
func flags(t *testing.T, args ...string) Sources {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.String("nfs", "", "")
	fs.String("9p", "", "")
	fs.StringArray("fuse", nil, "")
	fs.Bool("list-root", false, "")
	fs.String("store", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Sources{Flags: map[string]*pflag.Flag{
		"nfs.listen":   fs.Lookup("nfs"),
		"ninep.listen": fs.Lookup("9p"),
		"fuse":         fs.Lookup("fuse"),
		"list_root":    fs.Lookup("list-root"),
		"store.url":    fs.Lookup("store"),
	}}
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	c, err := Load(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load with nothing = %+v, want Default() %+v", c, Default())
	}
	if c.HasFrontend() {
		t.Error("the default configuration has a frontend")
	}
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        map[string]string
		args       []string
		want       string // the whole message after "config: FILE"
	}{
		{name: "unknown top-level key", yaml: "store:\n  url: memory:x\nnfss:\n  listen: 127.0.0.1:1\n",
			want: ":3: nfss: unknown key (valid: store, scrub, list_root, xattrs, owner, fuse, nfs, ninep, virtiofs, grpc, metrics, log, cache, timeouts)"},
		{name: "unknown nested key", yaml: "nfs:\n  listen: 127.0.0.1:2049\n  alowed_networks: [10.0.0.0/8]\n",
			want: ":3: nfs.alowed_networks: unknown key in nfs (valid: listen, allowed_networks, require_secure_port, max_read, max_connections)"},
		{name: "removed key", yaml: "cache:\n  verified_blobs: 10\n",
			want: ":2: cache.verified_blobs: was removed: blobs of remote stores are verified per chunk group as they stream"},
		{name: "spool too small", yaml: "store:\n  spool_size: 1000\n", want: ":2: store.spool_size: must be at least 1048576 (1 MiB), got 1000"},
		{name: "upper-case key", yaml: "NFS:\n  listen: 127.0.0.1:2049\n", want: ":1: NFS: unknown key"},
		{name: "unknown key in a list element", yaml: "fuse:\n  - mountpoint: /mnt/a\n    allow_others: true\n",
			want: ":3: fuse[0].allow_others: unknown key in fuse[0]"},
		{name: "duplicate key", yaml: "log:\n  level: info\n  level: debug\n", want: ":3: log.level: set twice (first on line 2)"},
		{name: "bool as string", yaml: "list_root: \"yes please\"\n", want: `:1: list_root: want true or false, got "yes please"`},
		{name: "int for string", yaml: "nfs:\n  listen: 2049\n", want: `:2: nfs.listen: want a string, got "2049" (quote it if it is meant as text)`},
		{name: "string for int", yaml: "cache:\n  directories: many\n", want: `:2: cache.directories: want an integer, got "many"`},
		{name: "negative uid", yaml: "owner:\n  uid: -1\n", want: `:2: owner.uid: want a non-negative integer, got "-1"`},
		{name: "list for scalar", yaml: "log:\n  level: [info]\n", want: `:2: log.level: want a string, got a list`},
		{name: "scalar for list", yaml: "nfs:\n  allowed_networks: 10.0.0.0/8\n", want: `:2: nfs.allowed_networks: want a list, got "10.0.0.0/8"`},
		{name: "scalar for section", yaml: "nfs: 127.0.0.1:2049\n", want: `:1: nfs: want a mapping of keys (listen, allowed_networks, require_secure_port, max_read, max_connections), got "127.0.0.1:2049"`},
		{name: "bad duration", yaml: "timeouts:\n  backend: 30\n", want: `:2: timeouts.backend: want a duration such as 30s or 5m, got "30"`},
		{name: "invalid yaml", yaml: "nfs:\n  listen: [\n", want: `: not valid YAML: line 2: did not find expected node content`},
		{name: "bad address", yaml: "nfs:\n  listen: 127.0.0.1\n", want: `:2: nfs.listen: want HOST:PORT such as 127.0.0.1:2049, got "127.0.0.1"`},
		{name: "bad port", yaml: "ninep:\n  listen: 127.0.0.1:99999\n", want: `:2: ninep.listen: port "99999" is not a number from 0 to 65535`},
		{name: "hostname", yaml: "nfs:\n  listen: example.org:2049\n", want: `:2: nfs.listen: host "example.org" is not an IP address (want HOST:PORT such as 127.0.0.1:2049)`},
		{name: "unix socket for nfs", yaml: "nfs:\n  listen: unix:/run/nfs.sock\n", want: `:2: nfs.listen: want HOST:PORT, got "unix:/run/nfs.sock" (unix sockets are not supported here)`},
		{name: "other hosts without allow-list", yaml: "nfs:\n  listen: 0.0.0.0:2049\n",
			want: `:2: nfs.listen: "0.0.0.0:2049" serves other hosts: set nfs.allowed_networks to the client networks allowed (loopback is always allowed)`},
		{name: "all interfaces without allow-list", yaml: "ninep:\n  listen: \":564\"\n",
			want: `:2: ninep.listen: ":564" serves other hosts: set ninep.allowed_networks`},
		{name: "invalid CIDR", yaml: "nfs:\n  listen: 0.0.0.0:2049\n  allowed_networks:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
			want: `:5: nfs.allowed_networks[1]: "10.0.0.0/33" is not a network in CIDR notation (such as 192.168.0.0/16) or an IP address`},
		{name: "CIDR with host bits", yaml: "grpc:\n  allowed_networks: [192.168.1.7/24]\n",
			want: `:2: grpc.allowed_networks[0]: "192.168.1.7/24" has host bits set; did you mean 192.168.1.0/24?`},
		{name: "two frontends on one port", yaml: "nfs:\n  listen: 127.0.0.1:2049\nninep:\n  listen: 127.0.0.1:2049\n",
			want: `:4: ninep.listen: 127.0.0.1:2049 is also nfs.listen: two frontends cannot share a port or socket`},
		{name: "port clash with every interface", yaml: "nfs:\n  listen: 127.0.0.1:2049\nmetrics:\n  listen: 0.0.0.0:2049\n  allowed_networks: [10.0.0.0/8]\n",
			want: `:4: metrics.listen: 0.0.0.0:2049 is also nfs.listen`},
		{name: "two frontends on one socket", yaml: "ninep:\n  listen: unix:/run/s.sock\ngrpc:\n  listen: unix:/run/s.sock\n",
			want: `:4: grpc.listen: unix:/run/s.sock is also ninep.listen`},
		{name: "virtiofs socket clash", yaml: "ninep:\n  listen: unix:/run/s.sock\nvirtiofs:\n  socket: /run/s.sock\n",
			want: `:4: virtiofs.socket: /run/s.sock is also ninep.listen`},
		{name: "duplicate mountpoint", yaml: "fuse:\n  - mountpoint: /mnt/a\n  - mountpoint: /mnt/a/\n",
			want: `:3: fuse[1].mountpoint: /mnt/a is also fuse[0].mountpoint`},
		{name: "mount without mountpoint", yaml: "fuse:\n  - allow_other: true\n", want: `:2: fuse[0].mountpoint: a FUSE mount needs a mountpoint`},
		{name: "msize too small", yaml: "ninep:\n  msize: 512\n", want: `:2: ninep.msize: 512 is outside 4096 to 4194304 bytes`},
		{name: "log level", yaml: "log:\n  level: verbose\n", want: `:2: log.level: want debug, info, warn or error, got "verbose"`},
		{name: "log format", yaml: "log:\n  format: xml\n", want: `:2: log.format: want text or json, got "xml"`},
		{name: "zero cache", yaml: "cache:\n  directories: 0\n", want: `:2: cache.directories: must be at least 1, got 0`},
		{name: "negative timeout", yaml: "timeouts:\n  shutdown: -1s\n", want: `:2: timeouts.shutdown: must be positive, got -1s`},
		{name: "zero handshake", yaml: "timeouts:\n  handshake: 0s\n", want: `:2: timeouts.handshake: must be positive, got 0s`},
		{name: "negative 9P idle", yaml: "timeouts:\n  ninep_idle: -1s\n", want: `:2: timeouts.ninep_idle: must not be negative (0 is off), got -1s`},
		{name: "few 9P fids", yaml: "ninep:\n  max_fids: 4\n", want: `:2: ninep.max_fids: must be at least 16, got 4`},
		{name: "zero scrub rate", yaml: "scrub:\n  bytes_per_second: 0\n", want: `:2: scrub.bytes_per_second: must be at least 1, got 0`},
		{name: "negative scrub interval", yaml: "scrub:\n  interval: -1h\n", want: `:2: scrub.interval: must not be negative, got -1h0m0s`},
		{name: "zero gRPC connections", yaml: "grpc:\n  max_connections: 0\n", want: `:2: grpc.max_connections: must be at least 1, got 0`},
		{name: "zero metrics connections", yaml: "metrics:\n  max_connections: 0\n", want: `:2: metrics.max_connections: must be at least 1, got 0`},
		{name: "env wrong type", env: map[string]string{"STOREFS_CACHE_DIRECTORIES": "lots"},
			want: `env STOREFS_CACHE_DIRECTORIES: cache.directories: want an integer, got "lots"`},
		{name: "env bad CIDR", env: map[string]string{"STOREFS_NFS_ALLOWED_NETWORKS": "10.0.0.0/8,nope"},
			want: `env STOREFS_NFS_ALLOWED_NETWORKS: nfs.allowed_networks[1]: "nope" is not a network`},
		{name: "env bad duration", env: map[string]string{"STOREFS_TIMEOUTS_BACKEND": "soon"},
			want: `env STOREFS_TIMEOUTS_BACKEND: timeouts.backend: want a duration such as 30s or 5m, got "soon"`},
		{name: "flag bad address", args: []string{"--nfs", "localhost"},
			want: `flag --nfs: nfs.listen: want HOST:PORT such as 127.0.0.1:2049, got "localhost"`},
		{name: "flag clashes with file", yaml: "nfs:\n  listen: 127.0.0.1:5640\n", args: []string{"--9p", "127.0.0.1:5640"},
			want: `flag --9p: ninep.listen: 127.0.0.1:5640 is also nfs.listen`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			src := flags(t, tc.args...)
			file := ""
			if tc.yaml != "" {
				file = writeFile(t, tc.yaml)
				src.File = file
			}
			_, err := Load(src)
			if err == nil {
				t.Fatalf("Load succeeded; want an error containing %q", tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error has more than one line: %q", msg)
			}
			want := "config: " + tc.want
			if strings.HasPrefix(tc.want, ":") {
				want = "config: " + file + tc.want
			}
			if !strings.HasPrefix(msg, want) {
				t.Errorf("error\n got %s\nwant %s", msg, want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	clearEnv(t)
	p := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(Sources{File: p})
	if err == nil || err.Error() != "config: "+p+": no such configuration file" {
		t.Errorf("err = %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	file := "nfs:\n  listen: 127.0.0.1:1001\nninep:\n  listen: 127.0.0.1:1002\n" +
		"grpc:\n  listen: 127.0.0.1:1003\nlog:\n  level: debug\nstore:\n  url: \"memory:\"\n"
	for _, tc := range []struct {
		name              string
		env               map[string]string
		args              []string
		nfs, ninep, grpc  string
		level, store      string
		listRoot, hasFUSE bool
	}{
		{name: "file", nfs: "127.0.0.1:1001", ninep: "127.0.0.1:1002", grpc: "127.0.0.1:1003", level: "debug", store: "memory:"},
		{name: "env over file", env: map[string]string{"STOREFS_NFS_LISTEN": "127.0.0.1:2001", "STOREFS_LOG_LEVEL": "warn", "STOREFS_STORE": "local:/srv/s"},
			nfs: "127.0.0.1:2001", ninep: "127.0.0.1:1002", grpc: "127.0.0.1:1003", level: "warn", store: "local:/srv/s"},
		{name: "specific env over alias", env: map[string]string{"STOREFS_STORE": "local:/a", "STOREFS_STORE_URL": "local:/b"},
			nfs: "127.0.0.1:1001", ninep: "127.0.0.1:1002", grpc: "127.0.0.1:1003", level: "debug", store: "local:/b"},
		{name: "flag over env over file", env: map[string]string{"STOREFS_NFS_LISTEN": "127.0.0.1:2001", "STOREFS_NINEP_LISTEN": "127.0.0.1:2002"},
			args: []string{"--nfs", "127.0.0.1:3001", "--list-root", "--fuse", "/mnt/x", "--store", "memory:"},
			nfs:  "127.0.0.1:3001", ninep: "127.0.0.1:2002", grpc: "127.0.0.1:1003", level: "debug", store: "memory:", listRoot: true, hasFUSE: true},
		{name: "empty env does not override", env: map[string]string{"STOREFS_NFS_LISTEN": ""},
			nfs: "127.0.0.1:1001", ninep: "127.0.0.1:1002", grpc: "127.0.0.1:1003", level: "debug", store: "memory:"},
		{name: "env list and bool", env: map[string]string{"STOREFS_LIST_ROOT": "true", "STOREFS_FUSE": "/mnt/a,/mnt/b"},
			nfs: "127.0.0.1:1001", ninep: "127.0.0.1:1002", grpc: "127.0.0.1:1003", level: "debug", store: "memory:", listRoot: true, hasFUSE: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			src := flags(t, tc.args...)
			src.File = writeFile(t, file)
			c, err := Load(src)
			if err != nil {
				t.Fatal(err)
			}
			got := []any{c.NFS.Listen, c.NineP.Listen, c.GRPC.Listen, c.Log.Level, c.Store.URL, c.ListRoot, len(c.FUSE) > 0}
			want := []any{tc.nfs, tc.ninep, tc.grpc, tc.level, tc.store, tc.listRoot, tc.hasFUSE}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestEnvList(t *testing.T) {
	clearEnv(t)
	t.Setenv("STOREFS_FUSE", "/mnt/a,/mnt/b")
	t.Setenv("STOREFS_NFS_ALLOWED_NETWORKS", "10.0.0.0/8, 192.0.2.7")
	t.Setenv("STOREFS_NFS_LISTEN", "0.0.0.0:2049")
	t.Setenv("STOREFS_TIMEOUTS_SHUTDOWN", "3s")
	c, err := Load(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []FUSEMount{{Mountpoint: "/mnt/a"}, {Mountpoint: "/mnt/b"}}; !reflect.DeepEqual(c.FUSE, want) {
		t.Errorf("fuse = %+v, want %+v", c.FUSE, want)
	}
	nets, err := ParseNetworks(c.NFS.AllowedNetworks)
	if err != nil || len(nets) != 2 || nets[1].String() != "192.0.2.7/32" {
		t.Errorf("allowed networks %v → %v, %v", c.NFS.AllowedNetworks, nets, err)
	}
	if c.Timeouts.Shutdown.Std() != 3*time.Second {
		t.Errorf("shutdown = %v", c.Timeouts.Shutdown.Std())
	}
}

func TestFileValues(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	src := Sources{File: writeFile(t, `# a full configuration
store:
  url: "local:/var/lib/storefs"
  verify_on_open: true
scrub: {enabled: false, bytes_per_second: 1000, interval: 1h, start_delay: 0s}
list_root: true
xattrs: false
owner: {uid: 1000, gid: 100}
fuse:
  - mountpoint: `+dir+`
    allow_other: true
nfs:
  listen: 0.0.0.0:2049
  allowed_networks: [10.0.2.0/24]
  require_secure_port: true
  max_read: 65536
  max_connections: 8
ninep:
  listen: unix:rel.sock
  msize: 65536
  max_fids: 1000
grpc:
  listen: 127.0.0.1:0
  max_connections: 9
metrics:
  listen: 127.0.0.1:9100
  max_connections: 3
log: {level: warn, format: json}
cache: {directories: 5, remote_memory: 2097152, nfs_handles: 7}
timeouts: {backend: 1s, shutdown: 2s, handshake: 4s, nfs_idle: 3m, ninep_idle: 1h, grpc_idle: 2m, metrics_idle: 30s}
`)}
	c, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	cwd, _ := os.Getwd()
	want := &Config{
		Store:    Store{URL: "local:/var/lib/storefs", VerifyOnOpen: true, SpoolSize: DefaultSpoolSize},
		Scrub:    Scrub{BytesPerSecond: 1000, Interval: Duration(time.Hour)},
		ListRoot: true,
		Owner:    Owner{UID: 1000, GID: 100},
		FUSE:     []FUSEMount{{Mountpoint: dir, AllowOther: true}},
		NFS:      NFS{Listen: "0.0.0.0:2049", AllowedNetworks: []string{"10.0.2.0/24"}, RequireSecurePort: true, MaxRead: 65536, MaxConnections: 8},
		NineP:    NineP{Listen: "unix:" + filepath.Join(cwd, "rel.sock"), Msize: 65536, AllowedNetworks: []string{}, MaxConnections: DefaultNinePConns, MaxFids: 1000, MaxServerFids: DefaultNinePServerFids},
		VirtioFS: VirtioFS{Tag: "storefs"},
		GRPC:     GRPC{Listen: "127.0.0.1:0", AllowedNetworks: []string{}, MaxConnections: 9},
		Metrics:  Metrics{Listen: "127.0.0.1:9100", AllowedNetworks: []string{}, MaxConnections: 3},
		Log:      Log{Level: "warn", Format: "json"},
		Cache:    Cache{Directories: 5, RemoteMemory: 2097152, NFSHandles: 7},
		Timeouts: Timeouts{Backend: Duration(time.Second), Shutdown: Duration(2 * time.Second), Handshake: Duration(4 * time.Second),
			NFSIdle: Duration(3 * time.Minute), NinePIdle: Duration(time.Hour), GRPCIdle: Duration(2 * time.Minute), MetricsIdle: Duration(30 * time.Second)},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

// TestPrintRoundTrip checks that the printed configuration loads back as
// the same configuration, and that it has every key.
func TestPrintRoundTrip(t *testing.T) {
	clearEnv(t)
	t.Setenv("STOREFS_NFS_LISTEN", "127.0.0.1:2049")
	t.Setenv("STOREFS_FUSE", "/mnt/x")
	c, err := Load(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range Keys() {
		leaf := key[strings.LastIndexByte(key, '.')+1:]
		if !strings.Contains(string(out), leaf+":") {
			t.Errorf("printed configuration lacks %s:\n%s", key, out)
		}
	}
	if !strings.Contains(string(out), "backend: 30s") {
		t.Errorf("durations are not printed as durations:\n%s", out)
	}
	clearEnv(t)
	back, err := Load(Sources{File: writeFile(t, string(out))})
	if err != nil {
		t.Fatalf("printed configuration does not load: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip: got %+v, want %+v", back, c)
	}
}

func TestDefaultFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if err := os.MkdirAll(filepath.Join(dir, "storefs"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "storefs", "config.yaml")
	if err := os.WriteFile(p, []byte("list_root: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := (Sources{}).FindFile(); got != p {
		t.Errorf("FindFile = %q, want %q", got, p)
	}
	c, err := Load(Sources{})
	if err != nil || !c.ListRoot {
		t.Errorf("Load = %+v, %v; want list_root from %s", c, err, p)
	}
	other := writeFile(t, "xattrs: false\n")
	t.Setenv(EnvConfig, other)
	if got := (Sources{}).FindFile(); got != other {
		t.Errorf("FindFile with %s = %q, want %q", EnvConfig, got, other)
	}
}

func TestKeysDocumented(t *testing.T) {
	// Every key of the schema is a YAML key of Default's encoding.
	out, err := yaml.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range Keys() {
		var v any = m
		for _, part := range strings.Split(key, ".") {
			mm, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%s: %v is not a mapping", key, v)
			}
			if v, ok = mm[part]; !ok {
				t.Errorf("key %s missing from the printed defaults", key)
			}
		}
	}
}

func TestChanged(t *testing.T) {
	a, b := Default(), Default()
	if got := Changed(a, b); len(got) != 0 {
		t.Errorf("Changed(default, default) = %v", got)
	}
	b.Log.Level = "debug"
	b.NFS.AllowedNetworks = []string{"10.0.0.0/8"}
	b.FUSE = []FUSEMount{{Mountpoint: "/mnt"}}
	want := []string{"fuse", "nfs.allowed_networks", "log.level"}
	if got := Changed(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
}

// STOREFS_STORE sets store.url and hides no other key of the store section.
func TestStoreAliasKeepsStoreKeys(t *testing.T) {
	clearEnv(t)
	t.Setenv("STOREFS_STORE", "memory:")
	src := flags(t)
	src.File = writeFile(t, "store:\n  verify_on_open: true\n  spool_size: 2097152\n")
	c, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.URL != "memory:" || !c.Store.VerifyOnOpen || c.Store.SpoolSize != 2097152 {
		t.Errorf("store = %+v, want memory:, verify_on_open and spool_size from the file", c.Store)
	}
}

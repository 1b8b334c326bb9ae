package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
)

func TestMain(m *testing.M) {
	// go-nfs-client's Target starts a cache cleaner that never ends (it
	// has no Close); it belongs to the test client, not to the server.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/willscott/go-nfs-client/nfs.(*Target).cleanupCache"))
}

// fixture is a store with one imported tree holding data.bin.
type fixture struct {
	store    *closeCounter
	base     string // the store path basename
	file     string // base + "/data.bin"
	data     []byte
	storeDig storeclient.StorePathDigest
}

// closeCounter is a memory store that counts Close calls and can hold
// GetPathInfo until released.
type closeCounter struct {
	*memory.Store
	closed atomic.Int32
	block  atomic.Pointer[chan struct{}]
}

func (c *closeCounter) Close() error {
	c.closed.Add(1)
	return c.Store.Close()
}

func (c *closeCounter) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	if ch := c.block.Load(); ch != nil {
		select {
		case <-*ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.Store.GetPathInfo(ctx, d)
}

// TrustedLocal: the memory store's data is verified at write.
func (c *closeCounter) TrustedLocal() bool { return true }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 200<<10+123)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &closeCounter{Store: memory.New()}
	pi, err := importer.ImportPath(t.Context(), s, dir, importer.Options{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	base := pi.StorePath.Basename()
	return &fixture{store: s, base: base, file: base + "/data.bin", data: data, storeDig: pi.StorePath.Digest}
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start starts a server over the fixture's store.
func (fx *fixture) start(t *testing.T, cfg *config.Config) (*Server, error) {
	t.Helper()
	return Start(t.Context(), cfg, Options{
		Logger:    quietLog(),
		OpenStore: func(context.Context, string) (storeclient.Store, error) { return fx.store, nil },
	})
}

func frontend(t *testing.T, s *Server, name string) Frontend {
	t.Helper()
	for _, f := range s.Frontends() {
		if f.Name() == name {
			return f
		}
	}
	t.Fatalf("no %s frontend", name)
	return nil
}

// metricValue returns the sum of the series name{labels...} (a histogram
// counts its samples), 0 if there is none.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func refused(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func TestServeOneFSOverEveryProtocol(t *testing.T) {
	fx := newFixture(t)
	cfg := config.Default()
	cfg.NFS.Listen = "127.0.0.1:0"
	cfg.NineP.Listen = "127.0.0.1:0"
	sock := filepath.Join(t.TempDir(), "grpc.sock")
	cfg.GRPC.Listen = "unix:" + sock
	cfg.Metrics.Listen = "127.0.0.1:0"
	s, err := fx.start(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	n, err := s.FS().Walk(t.Context(), fx.file, false)
	if err != nil {
		t.Fatal(err)
	}
	nfsAddr, ninepAddr := frontend(t, s, "nfs").Addr(), frontend(t, s, "ninep").Addr()
	metricsAddr := frontend(t, s, "metrics").Addr()

	got, ino := nfsRead(t, nfsAddr, fx.file)
	if !bytes.Equal(got, fx.data) || ino != n.Ino() {
		t.Errorf("nfs: %d bytes (equal %v), fileid %d; want %d bytes, inode %d", len(got), bytes.Equal(got, fx.data), ino, len(fx.data), n.Ino())
	}
	got, ino = p9Read(t, "tcp", ninepAddr, fx.file)
	if !bytes.Equal(got, fx.data) || ino != n.Ino() {
		t.Errorf("9p: %d bytes (equal %v), qid path %d; want %d bytes, inode %d", len(got), bytes.Equal(got, fx.data), ino, len(fx.data), n.Ino())
	}

	// The gRPC store serves the same PathInfo.
	gs, err := grpcstore.Open("grpc+unix://"+sock, grpcstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pi, err := gs.GetPathInfo(t.Context(), fx.storeDig)
	gs.Close()
	if err != nil || pi.StorePath.Basename() != fx.base {
		t.Errorf("grpc GetPathInfo = %v, %v; want %s", pi, err, fx.base)
	}

	reg := s.Metrics().Registry()
	for _, p := range []string{ProtoNFS, ProtoNineP} {
		if v := metricValue(t, reg, "storefs_read_bytes_total", map[string]string{"protocol": p}); v != float64(len(fx.data)) {
			t.Errorf("%s bytes served = %v, want %d", p, v, len(fx.data))
		}
		for _, op := range []string{"lookup", "open", "read", "close"} {
			if v := metricValue(t, reg, "storefs_requests_total", map[string]string{"protocol": p, "op": op}); v == 0 {
				t.Errorf("%s %s requests = 0", p, op)
			}
		}
		if v := metricValue(t, reg, "storefs_open_files", map[string]string{"protocol": p}); v != 0 {
			t.Errorf("%s open files = %v after the clients closed", p, v)
		}
	}
	if v := metricValue(t, reg, "storefs_requests_total", map[string]string{"protocol": ProtoGRPC}); v == 0 {
		t.Error("no gRPC request counted")
	}
	if v := metricValue(t, reg, "storefs_cache_lookups_total", map[string]string{"cache": "directory", "result": "hit"}); v == 0 {
		t.Error("no directory cache hit counted (the second protocol should hit)")
	}
	if v := metricValue(t, reg, "storefs_backend_calls_total", map[string]string{"call": "get_path_info"}); v == 0 {
		t.Error("no backend call counted")
	}

	code, body := httpGet(t, "http://"+metricsAddr+"/metrics")
	if code != 200 || !strings.Contains(body, `storefs_requests_total{op="read",protocol="ninep"}`) {
		t.Errorf("/metrics: %d, lacks the 9P read counter:\n%.2000s", code, body)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{nfsAddr, ninepAddr, metricsAddr} {
		if !refused(a) {
			t.Errorf("%s still accepts connections after Shutdown", a)
		}
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gRPC socket left behind: %v", err)
	}
	if fx.store.closed.Load() != 1 {
		t.Errorf("store closed %d times, want 1", fx.store.closed.Load())
	}
}

func TestStartFailureLeavesNothing(t *testing.T) {
	fx := newFixture(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nfsAddr := free.Addr().String()
	free.Close()

	cfg := config.Default()
	cfg.NFS.Listen = nfsAddr
	cfg.NineP.Listen = busy.Addr().String() // starts after NFS, fails
	var mnt string
	if FUSEUsable() {
		mnt = filepath.Join(t.TempDir(), "mnt") // created by the frontend
		cfg.FUSE = []config.FUSEMount{{Mountpoint: mnt}}
	}
	s, err := fx.start(t, cfg)
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("Start succeeded with the 9P port taken")
	}
	if !strings.Contains(err.Error(), "start ninep") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q does not say that 9P could not bind", err)
	}
	if !refused(nfsAddr) {
		t.Error("NFS still listens after the failed start")
	}
	if fx.store.closed.Load() != 1 {
		t.Errorf("store closed %d times, want 1", fx.store.closed.Load())
	}
	if mnt != "" {
		if mounted(t, mnt) {
			t.Errorf("%s still mounted after the failed start", mnt)
		}
		if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("mountpoint the frontend created is left: %v", err)
		}
	}
}

// mounted reports whether dir is a mount point.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

func TestFUSEMount(t *testing.T) {
	e2etest.NeedFUSE(t)
	fx := newFixture(t)
	mnt := t.TempDir()
	cfg := config.Default()
	cfg.FUSE = []config.FUSEMount{{Mountpoint: mnt}}
	s, err := fx.start(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	got, err := os.ReadFile(filepath.Join(mnt, fx.file))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.data) {
		t.Errorf("FUSE read %d bytes, not the file's %d", len(got), len(fx.data))
	}
	reg := s.Metrics().Registry()
	if v := metricValue(t, reg, "storefs_fuse_mounts", nil); v != 1 {
		t.Errorf("mounts = %v, want 1", v)
	}
	if v := metricValue(t, reg, "storefs_requests_total", map[string]string{"protocol": "fuse", "op": "open"}); v == 0 {
		t.Error("no FUSE open counted")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mounted(t, mnt) {
		t.Errorf("%s still mounted after Shutdown", mnt)
	}
	if v := metricValue(t, reg, "storefs_fuse_mounts", nil); v != 0 {
		t.Errorf("mounts = %v after Shutdown, want 0", v)
	}
}

// TestDrain checks that a request in flight when shutdown starts gets its
// answer: the port closes at once, the connection stays until the request
// is done.
func TestDrain(t *testing.T) {
	fx := newFixture(t)
	cfg := config.Default()
	cfg.NineP.Listen = "127.0.0.1:0"
	s, err := fx.start(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := frontend(t, s, "ninep").Addr()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p9.NewClient(&interopConn{Conn: conn}, p9.WithMessageSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	fx.store.block.Store(&release)

	var wg sync.WaitGroup
	var walkErr error
	wg.Add(1)
	go func() { // the request in flight: a lookup held in the store
		defer wg.Done()
		_, f, err := root.Walk([]string{fx.base})
		if err == nil {
			f.Close()
		}
		walkErr = err
	}()
	waitFor(t, func() bool { return s.Metrics().InFlight(ProtoNineP) == 1 })

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	waitFor(t, func() bool { return refused(addr) }) // no new clients...
	close(release)                                   // ...but the old request finishes
	wg.Wait()
	if walkErr != nil {
		t.Errorf("the request in flight at shutdown failed: %v", walkErr)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	root.Close()
}

// waitFor polls cond until it holds; the test's own timeout bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatal("gave up waiting")
		default:
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReload(t *testing.T) {
	fx := newFixture(t)
	cfg := config.Default()
	cfg.NFS.Listen = "127.0.0.1:0"
	level := new(slog.LevelVar)
	s, err := Start(t.Context(), cfg, Options{Logger: quietLog(), LogLevel: level,
		OpenStore: func(context.Context, string) (storeclient.Store, error) { return fx.store, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	outside := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 700}
	if s.allow["nfs"].Allows(outside) {
		t.Fatal("10.1.2.3 allowed before the reload")
	}
	next := *cfg
	next.Log.Level = "debug"
	next.NFS.AllowedNetworks = []string{"10.0.0.0/8"}
	next.Cache.Directories = 5
	next.NFS.Listen = "127.0.0.1:1" // needs a restart
	next.ListRoot = true            // needs a restart
	rep, err := s.Reload(&next)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nfs.allowed_networks", "log.level", "cache.directories"}; !equalSets(rep.Applied, want) {
		t.Errorf("applied %v, want %v", rep.Applied, want)
	}
	if want := []string{"list_root", "nfs.listen"}; !equalSets(rep.NeedRestart, want) {
		t.Errorf("need restart %v, want %v", rep.NeedRestart, want)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level = %v, want debug", level.Level())
	}
	if !s.allow["nfs"].Allows(outside) {
		t.Error("10.1.2.3 not allowed after the reload")
	}
	if got := s.Config(); got.NFS.Listen != cfg.NFS.Listen || got.Log.Level != "debug" || got.ListRoot {
		t.Errorf("config in effect: listen %q, level %q, list_root %v", got.NFS.Listen, got.Log.Level, got.ListRoot)
	}
	// Reloading the same configuration again changes nothing.
	rep, err = s.Reload(s.Config())
	if err != nil || len(rep.Applied)+len(rep.NeedRestart) != 0 {
		t.Errorf("second reload: %+v, %v", rep, err)
	}
}

func equalSets(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, s := range a {
		m[s] = true
	}
	for _, s := range b {
		if !m[s] {
			return false
		}
	}
	return true
}

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _, err := pc.ReadFromUnix(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("received %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestQuickStart(t *testing.T) {
	cfg := config.Default()
	if !QuickStart(cfg) || cfg.NFS.Listen != "127.0.0.1:0" || cfg.NineP.Listen != "127.0.0.1:0" {
		t.Errorf("QuickStart on the defaults: nfs %q, 9p %q", cfg.NFS.Listen, cfg.NineP.Listen)
	}
	if FUSEUsable() && (len(cfg.FUSE) != 1 || cfg.FUSE[0].Mountpoint != DefaultMountpoint()) {
		t.Errorf("FUSE usable but QuickStart mounts %v", cfg.FUSE)
	}
	cfg = config.Default()
	cfg.GRPC.Listen = "127.0.0.1:0"
	if QuickStart(cfg) || cfg.NFS.Listen != "" {
		t.Error("QuickStart changed a configuration that has a frontend")
	}
}

// TestVirtioFSSocket checks that the virtio-fs back-end listens on its
// socket with the other frontends and removes it at shutdown. Guests
// reading through it are e2e/vm's business (it needs a VMM).
func TestVirtioFSSocket(t *testing.T) {
	fx := newFixture(t)
	sock := filepath.Join(t.TempDir(), "virtiofs.sock")
	cfg := config.Default()
	cfg.VirtioFS.Socket = sock
	cfg.NFS.Listen = "127.0.0.1:0"
	s, err := fx.start(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if got := frontend(t, s, "virtiofs").Addr(); got != "unix:"+sock {
		t.Errorf("Addr = %q", got)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("virtio-fs socket: %v", err)
	}
	c.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Shutdown: %v", err)
	}
}

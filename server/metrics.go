package server

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/internal/netguard"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/vfs"
)

// The protocol labels of the frontends.
const (
	ProtoFUSE  = "fuse"
	ProtoNFS   = "nfs"
	ProtoNineP = "ninep"
	ProtoGRPC  = "grpc"
)

var protocols = []string{ProtoFUSE, ProtoNFS, ProtoNineP, ProtoVirtioFS}

// Metrics are the daemon's Prometheus metrics, in a registry of their own.
// It is the vfs.Observer of the daemon's FS: every vfs operation of every
// frontend is counted under the frontend's protocol label, so protocol
// packages need no metrics code. It also counts operations in flight per
// protocol, which shutdown waits for.
type Metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	handles   *prometheus.GaugeVec
	cache     *prometheus.CounterVec
	backend   *prometheus.CounterVec
	backendEr *prometheus.CounterVec
	backendLt *prometheus.HistogramVec
	mounts    prometheus.Gauge
	frontends *prometheus.GaugeVec
	conns     *connCollector
	scrub     *scrubCollector
	// grpcStats counts what the gRPC frontend sends (grpcOptions hands it
	// to the server), read by grpcSent at each scrape.
	grpcStats grpcserver.Stats
	grpcSent  prometheus.CounterFunc

	// per is resolved per protocol at construction, so that an operation
	// costs no label lookups. Read-only after NewMetrics.
	per map[string]*protoMetrics
}

// protoMetrics are one protocol's series.
type protoMetrics struct {
	inflight atomic.Int64
	requests [vfs.NumOps]prometheus.Counter
	errors   [vfs.NumOps]prometheus.Counter
	latency  [vfs.NumOps]prometheus.Observer
	bytes    prometheus.Counter
	handles  prometheus.Gauge
}

// NewMetrics returns the metrics, registered in a new registry along with
// the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_requests_total", Help: "Filesystem operations served, by protocol and vfs operation.",
		}, []string{"protocol", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_request_errors_total", Help: "Filesystem operations that failed (ENOENT included), by protocol and operation.",
		}, []string{"protocol", "op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "storefs_request_duration_seconds", Help: "Time spent in filesystem operations, by protocol and operation.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12), // 1 µs … 4 s
		}, []string{"protocol", "op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_read_bytes_total", Help: "File bytes served, by protocol.",
		}, []string{"protocol"}),
		handles: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "storefs_open_files", Help: "Files open for reading, by protocol.",
		}, []string{"protocol"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_cache_lookups_total", Help: "Lookups in the in-memory caches, by cache and result (hit, miss).",
		}, []string{"cache", "result"}),
		backend: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_backend_calls_total", Help: "Calls to the store, by call.",
		}, []string{"call"}),
		backendEr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storefs_backend_errors_total", Help: "Calls to the store that failed (not found included), by call.",
		}, []string{"call"}),
		backendLt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "storefs_backend_duration_seconds", Help: "Time spent in calls to the store, by call.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}, []string{"call"}),
		mounts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "storefs_fuse_mounts", Help: "FUSE mounts in place.",
		}),
		frontends: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "storefs_frontend_up", Help: "1 for each frontend that is serving, by protocol and address.",
		}, []string{"protocol", "address"}),
		conns: newConnCollector(),
		scrub: newScrubCollector(),
		per:   make(map[string]*protoMetrics),
	}
	m.grpcSent = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "storefs_grpc_blob_sent_bytes_total", Help: "Blob bytes sent by gRPC BlobService.Read (the chunks' data, not their framing).",
	}, func() float64 { return float64(m.grpcStats.BlobBytesSent()) })
	m.reg.MustRegister(m.requests, m.errors, m.latency, m.bytes, m.handles, m.cache,
		m.backend, m.backendEr, m.backendLt, m.mounts, m.frontends, m.conns, m.scrub, m.grpcSent,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// gRPC calls are counted by method (grpcOptions), not by vfs operation.
	m.per[ProtoGRPC] = &protoMetrics{}
	for _, p := range append([]string{""}, protocols...) {
		pm := &protoMetrics{
			bytes:   m.bytes.WithLabelValues(p),
			handles: m.handles.WithLabelValues(p),
		}
		for op := vfs.Op(0); op < vfs.NumOps; op++ {
			pm.requests[op] = m.requests.WithLabelValues(p, op.String())
			pm.errors[op] = m.errors.WithLabelValues(p, op.String())
			pm.latency[op] = m.latency.WithLabelValues(p, op.String())
		}
		m.per[p] = pm
	}
	return m
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) proto(p string) *protoMetrics {
	if pm, ok := m.per[p]; ok {
		return pm
	}
	return m.per[""]
}

// OpStart implements vfs.Observer.
func (m *Metrics) OpStart(protocol string, op vfs.Op) {
	m.proto(protocol).inflight.Add(1)
}

// OpEnd implements vfs.Observer.
func (m *Metrics) OpEnd(protocol string, op vfs.Op, elapsed time.Duration, n int, err error) {
	pm := m.proto(protocol)
	pm.inflight.Add(-1)
	if op >= vfs.NumOps {
		return
	}
	pm.requests[op].Inc()
	pm.latency[op].Observe(elapsed.Seconds())
	if err != nil {
		pm.errors[op].Inc()
	}
	switch op {
	case vfs.OpRead:
		if n > 0 {
			pm.bytes.Add(float64(n))
		}
	case vfs.OpOpen:
		if err == nil {
			pm.handles.Inc()
		}
	case vfs.OpClose:
		pm.handles.Dec()
	}
}

// CacheLookup implements vfs.Observer.
func (m *Metrics) CacheLookup(cache string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cache.WithLabelValues(cache, result).Inc()
}

// BackendCall implements vfs.Observer.
func (m *Metrics) BackendCall(call string, elapsed time.Duration, err error) {
	m.backend.WithLabelValues(call).Inc()
	m.backendLt.WithLabelValues(call).Observe(elapsed.Seconds())
	if err != nil {
		m.backendEr.WithLabelValues(call).Inc()
	}
}

// InFlight returns the vfs operations of protocol running now.
func (m *Metrics) InFlight(protocol string) int64 { return m.proto(protocol).inflight.Load() }

// setFrontend marks a frontend up (1) or down (0).
func (m *Metrics) setFrontend(protocol, addr string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.frontends.WithLabelValues(protocol, addr).Set(v)
	if protocol == ProtoFUSE {
		m.mounts.Add(2*v - 1)
	}
}

// grpcOptions returns gRPC server options that count every call in the
// request metrics under protocol "grpc", the operation being the method
// ("tvix.castore.v1.BlobService/Read"), and make the server count the blob
// bytes it sends in m.grpcStats.
func (m *Metrics) grpcOptions() []grpc.ServerOption {
	pm := m.proto(ProtoGRPC)
	done := func(method string, t0 time.Time, err error) {
		pm.inflight.Add(-1)
		method = strings.TrimPrefix(method, "/")
		m.requests.WithLabelValues(ProtoGRPC, method).Inc()
		m.latency.WithLabelValues(ProtoGRPC, method).Observe(time.Since(t0).Seconds())
		if err != nil && status.Code(err) != codes.OK {
			m.errors.WithLabelValues(ProtoGRPC, method).Inc()
		}
	}
	return []grpc.ServerOption{
		grpcserver.WithStats(&m.grpcStats),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			pm.inflight.Add(1)
			t0 := time.Now()
			resp, err := h(ctx, req)
			done(info.FullMethod, t0, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			pm.inflight.Add(1)
			t0 := time.Now()
			err := h(srv, ss)
			done(info.FullMethod, t0, err)
			return err
		}),
	}
}

// handler serves /metrics, /healthz (200 while the process runs) and
// /readyz (200 once every frontend serves, 503 while starting or stopping).
func (m *Metrics) handler(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// connCollector reports the connections of the network frontends'
// listeners, read from their netguard counters at each scrape.
type connCollector struct {
	open, closed *prometheus.Desc

	mu        sync.Mutex
	listeners map[string]*netguard.Listener // by protocol
}

func newConnCollector() *connCollector {
	return &connCollector{
		open: prometheus.NewDesc("storefs_connections", "Client connections open now, by protocol.",
			[]string{"protocol"}, nil),
		closed: prometheus.NewDesc("storefs_connections_closed_total",
			"Client connections closed by the daemon, by protocol and reason (refused: network not allowed; evicted: at max_connections; handshake: no request in time; idle).",
			[]string{"protocol", "reason"}, nil),
		listeners: make(map[string]*netguard.Listener),
	}
}

// addListener reports the connections of a frontend's listener from now on.
func (m *Metrics) addListener(protocol string, l *netguard.Listener) {
	m.conns.mu.Lock()
	defer m.conns.mu.Unlock()
	m.conns.listeners[protocol] = l
}

// Describe implements prometheus.Collector.
func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.closed
}

// Collect implements prometheus.Collector.
func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, l := range c.listeners {
		st := l.Stats()
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(st.Open), p)
		for _, r := range []struct {
			reason string
			n      int64
		}{
			{netguard.ReasonRefused, st.Refused}, {netguard.ReasonEvicted, st.Evicted},
			{netguard.ReasonHandshake, st.Handshake}, {netguard.ReasonIdle, st.Idle},
		} {
			ch <- prometheus.MustNewConstMetric(c.closed, prometheus.CounterValue, float64(r.n), p, r.reason)
		}
	}
}

// scrubCollector reports the store's scrubber, read from its statistics at
// each scrape; it reports nothing while no scrubber runs.
type scrubCollector struct {
	passes, blobs, bytes, corrupt, unreadable, lastPass, running, quarantined *prometheus.Desc

	mu sync.Mutex
	sc scrubber
}

func newScrubCollector() *scrubCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &scrubCollector{
		passes:      d("storefs_scrub_passes_total", "Complete scrubber passes over every blob of the store."),
		blobs:       d("storefs_scrub_blobs_total", "Blobs the scrubber has re-hashed."),
		bytes:       d("storefs_scrub_bytes_total", "Bytes the scrubber has re-hashed."),
		corrupt:     d("storefs_scrub_corrupt_total", "Blobs the scrubber found corrupt (and quarantined)."),
		unreadable:  d("storefs_scrub_unreadable_total", "Blobs the scrubber could not read."),
		lastPass:    d("storefs_scrub_last_pass_end_timestamp_seconds", "When the last complete pass ended (0: none yet)."),
		running:     d("storefs_scrub_running", "1 while the scrubber runs."),
		quarantined: d("storefs_quarantined_blobs", "Blobs of the store in quarantine: served as EIO until imported again."),
	}
}

// setScrubber reports sc from now on.
func (m *Metrics) setScrubber(sc scrubber) {
	m.scrub.mu.Lock()
	defer m.scrub.mu.Unlock()
	m.scrub.sc = sc
}

// Describe implements prometheus.Collector.
func (c *scrubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.passes, c.blobs, c.bytes, c.corrupt, c.unreadable, c.lastPass, c.running, c.quarantined} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *scrubCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sc := c.sc
	c.mu.Unlock()
	if sc == nil {
		return
	}
	st := sc.ScrubStats()
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(c.passes, st.Passes)
	counter(c.blobs, st.Blobs)
	counter(c.bytes, st.Bytes)
	counter(c.corrupt, st.Corrupt)
	counter(c.unreadable, st.Unreadable)
	var last, running float64
	if !st.LastPassEnded.IsZero() {
		last = float64(st.LastPassEnded.UnixNano()) / 1e9
	}
	if st.Running {
		running = 1
	}
	ch <- prometheus.MustNewConstMetric(c.lastPass, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, running)
	ch <- prometheus.MustNewConstMetric(c.quarantined, prometheus.GaugeValue, float64(sc.QuarantineCount()))
}

package netguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func tcp(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestAllowList(t *testing.T) {
	a := NewAllowList([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	cases := []struct {
		name string
		addr net.Addr
		want bool
	}{
		{"loopback v4", tcp("127.0.0.1:1000"), true},
		{"loopback v4 other", tcp("127.9.9.9:1000"), true},
		{"loopback v6", tcp("[::1]:1000"), true},
		{"listed", tcp("10.1.2.3:1000"), true},
		{"listed, v4-mapped", tcp("[::ffff:10.1.2.3]:1000"), true},
		{"not listed", tcp("10.2.0.1:1000"), false},
		{"not listed v6", tcp("[2001:db8::1]:1000"), false},
		{"unix", &net.UnixAddr{Name: "/tmp/s", Net: "unix"}, true},
		{"nil", nil, false},
	}
	for _, tc := range cases {
		if got := a.Allows(tc.addr); got != tc.want {
			t.Errorf("%s: Allows(%v) = %v, want %v", tc.name, tc.addr, got, tc.want)
		}
	}
	var none *AllowList
	if none.Allows(tcp("10.1.2.3:1")) || !none.Allows(tcp("127.0.0.1:1")) {
		t.Error("nil AllowList: want loopback only")
	}
	a.Set(nil)
	if a.Allows(tcp("10.1.2.3:1000")) {
		t.Error("after Set(nil): a listed network is still allowed")
	}
}

func TestCheckListenAddr(t *testing.T) {
	some := NewAllowList([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	for _, tc := range []struct {
		addr  net.Addr
		allow *AllowList
		ok    bool
	}{
		{tcp("127.0.0.1:1"), nil, true},
		{tcp("[::1]:1"), nil, true},
		{tcp("0.0.0.0:1"), nil, false},
		{tcp("0.0.0.0:1"), NewAllowList(nil), false},
		{tcp("0.0.0.0:1"), some, true},
		{tcp("192.168.1.1:1"), nil, false},
		{&net.UnixAddr{Name: "/s", Net: "unix"}, nil, true},
	} {
		if err := CheckListenAddr(tc.addr, tc.allow); (err == nil) != tc.ok {
			t.Errorf("CheckListenAddr(%v, %v) = %v, want ok=%v", tc.addr, tc.allow.Networks(), err, tc.ok)
		}
	}
}

// fakeListener hands out the pipe connections pushed into it, each with a
// chosen remote address.
type fakeListener struct {
	conns     chan net.Conn
	closeOnce sync.Once
	done      chan struct{}
}

func newFakeListener() *fakeListener {
	return &fakeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error { f.closeOnce.Do(func() { close(f.done) }); return nil }
func (f *fakeListener) Addr() net.Addr {
	return tcp("127.0.0.1:9")
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// dial pushes connections from the remotes into f, in order, and returns
// their client ends; the server ends are what Accept returns.
func (f *fakeListener) dial(t *testing.T, remotes ...string) []net.Conn {
	t.Helper()
	var clients, servers []net.Conn
	for range remotes {
		client, server := net.Pipe()
		t.Cleanup(func() { client.Close(); server.Close() })
		clients, servers = append(clients, client), append(servers, server)
	}
	go func() {
		for i, r := range remotes {
			select {
			case f.conns <- addrConn{servers[i], tcp(r)}:
			case <-f.done:
				return
			}
		}
	}()
	return clients
}

func logBuffer() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAcceptRefusesOtherNetworks(t *testing.T) {
	fl := newFakeListener()
	log, logs := logBuffer()
	l := New(fl, Options{Protocol: "test", Allow: NewAllowList([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}), Logger: log})
	defer l.Close()
	outside := fl.dial(t, "192.168.0.5:4000", "10.0.0.5:4000")[0]
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != "10.0.0.5:4000" {
		t.Errorf("accepted %s, want the allowed client", got)
	}
	// The refused client's end sees the close.
	outside.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := outside.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("refused client read: %v, want the connection closed", err)
	}
	if st := l.Stats(); st.Refused != 1 || st.Accepted != 1 || st.Open != 1 {
		t.Errorf("stats %+v, want 1 refused, 1 accepted, 1 open", st)
	}
	if !strings.Contains(logs.String(), "client network not allowed") || !strings.Contains(logs.String(), "192.168.0.5:4000") {
		t.Errorf("no refusal line naming the client in the log:\n%s", logs)
	}
	c.Close()
	if st := l.Stats(); st.Open != 0 {
		t.Errorf("after Close: %d open, want 0", st.Open)
	}
}

// serve accepts on l until it fails, keeping every connection.
func serve(l *Listener) <-chan net.Conn {
	out := make(chan net.Conn, 64)
	go func() {
		defer close(out)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			out <- c
		}
	}()
	return out
}

// closedSoon reports whether c (a client end) sees its connection closed
// within d; false if the read times out with the connection still open.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestCapEvictsSilentBeforeActive(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, logs := logBuffer()
	l := New(lis, Options{Protocol: "test", MaxConns: 3, Logger: log})
	defer l.Close()
	accepted := serve(l)
	dial := func() (client net.Conn, server net.Conn) {
		t.Helper()
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, <-accepted
	}
	c1, s1 := dial() // active, long ago
	Active(s1)
	time.Sleep(20 * time.Millisecond)
	c2, s2 := dial() // active, recently
	Active(s2)
	c3, s3 := dial() // silent: never completed a message
	defer s1.Close()
	defer s2.Close()
	defer s3.Close()

	_, s4 := dial() // at the cap: the silent one goes first
	defer s4.Close()
	if !closedSoon(c3, 5*time.Second) {
		t.Fatal("the silent connection was not closed at the cap")
	}
	if closedSoon(c1, 50*time.Millisecond) || closedSoon(c2, 50*time.Millisecond) {
		t.Fatal("an active connection was closed while a silent one was there")
	}
	Active(s4)
	_, s5 := dial() // then the least recently active: c1
	defer s5.Close()
	if !closedSoon(c1, 5*time.Second) {
		t.Fatal("the least recently active connection was not closed at the cap")
	}
	if closedSoon(c2, 50*time.Millisecond) {
		t.Fatal("a more recently active connection was closed")
	}
	if st := l.Stats(); st.Evicted != 2 || st.Open != 3 {
		t.Errorf("stats %+v, want 2 evicted, 3 open", st)
	}
	if n := strings.Count(logs.String(), "too many connections"); n != 2 {
		t.Errorf("%d eviction lines, want 2:\n%s", n, logs)
	}
}

func TestHandshakeAndIdleTimeouts(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logBuffer()
	l := New(lis, Options{Protocol: "test", HandshakeTimeout: 150 * time.Millisecond, IdleTimeout: 400 * time.Millisecond, Logger: log})
	defer l.Close()
	accepted := serve(l)

	silent, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s1 := <-accepted
	defer s1.Close()
	talker, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer talker.Close()
	s2 := <-accepted
	defer s2.Close()

	// The talker completes a message every 100 ms for 600 ms: longer than
	// both timeouts, so only its activity keeps it open.
	start := time.Now()
	for time.Since(start) < 600*time.Millisecond {
		Active(s2)
		time.Sleep(100 * time.Millisecond)
	}
	if !closedSoon(silent, time.Second) {
		t.Fatal("a connection that never completed a message outlived the handshake timeout")
	}
	if closedSoon(talker, 10*time.Millisecond) {
		t.Fatal("an active connection was closed")
	}
	// Now it falls silent: the idle timeout closes it.
	if !closedSoon(talker, 3*time.Second) {
		t.Fatal("an idle connection was not closed")
	}
	st := l.Stats()
	if st.Handshake != 1 || st.Idle != 1 || st.Open != 0 {
		t.Errorf("stats %+v, want 1 handshake, 1 idle, 0 open", st)
	}
}

func TestActiveOnRead(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(lis, Options{HandshakeTimeout: 200 * time.Millisecond, ActiveOnRead: true, Logger: slog.New(slog.DiscardHandler)})
	defer l.Close()
	accepted := serve(l)
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	c.Write([]byte("x"))
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if closedSoon(c, 500*time.Millisecond) {
		t.Fatal("a connection whose bytes were read was closed by the handshake timeout")
	}
}

func TestStopDrains(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(lis, Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	l.Stop()
	if _, err := net.Dial("tcp", lis.Addr().String()); err == nil {
		t.Error("dial after Stop succeeded")
	}
	select {
	case err := <-errc:
		t.Fatalf("Accept returned %v after Stop, want it to block until Close", err)
	case <-time.After(50 * time.Millisecond):
	}
	l.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// A guarded TCP connection still offers its socket for sendfile.
func TestSyscallConn(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(lis, Options{})
	defer l.Close()
	accepted := serve(l)
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	sc, ok := s.(syscall.Conn)
	if !ok {
		t.Fatal("a guarded connection is not a syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Errorf("Control: fd %d, %v", fd, err)
	}
	p, _ := net.Pipe()
	defer p.Close()
	if _, err := (&Conn{Conn: p, l: l}).SyscallConn(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("SyscallConn of a pipe: %v, want ErrUnsupported", err)
	}
}

// A flood of refused connections logs a bounded number of lines, and the
// next line says how many were left out.
func TestLogRateLimit(t *testing.T) {
	fl := newFakeListener()
	log, logs := logBuffer()
	l := New(fl, Options{Protocol: "test", Logger: log})
	defer l.Close()
	remotes := make([]string, 0, 201)
	for i := range 200 {
		remotes = append(remotes, fmt.Sprintf("192.0.2.%d:1", i%250))
	}
	remotes = append(remotes, "127.0.0.1:1")
	fl.dial(t, remotes...)
	if _, err := l.Accept(); err != nil { // returns after refusing the 200
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "connection refused"); n < logBurst || n > logBurst+5 {
		t.Errorf("%d lines for 200 refusals in a burst, want about %d", n, logBurst)
	}
	if l.Stats().Refused != 200 {
		t.Errorf("refused %d, want 200", l.Stats().Refused)
	}
	time.Sleep(time.Second / logRate)
	fl.dial(t, "192.0.2.1:2", "127.0.0.1:2")
	if _, err := l.Accept(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "suppressed=") {
		t.Errorf("no line counts the suppressed ones:\n%s", logs)
	}
}

package grpcstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

// proxy forwards TCP connections to a server and can freeze them, as a
// SIGSTOPped server does: connections stay open, nothing gets through.
type proxy struct {
	lis    net.Listener
	target string

	mu     sync.Mutex
	thawed chan struct{} // closed while the proxy forwards
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target, thawed: make(chan struct{})}
	close(p.thawed)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(b, c)
		go p.pipe(c, b)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thawed := p.thawed
			p.mu.Unlock()
			<-thawed
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

func (p *proxy) stop() {
	p.lis.Close()
	p.thaw()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// testTimeout is the store timeout of the deadline tests, and slack what
// a failure may take beyond it (scheduling under -race).
const (
	testTimeout = 300 * time.Millisecond
	slack       = 700 * time.Millisecond
)

// checkDeadline checks that err is a timeout that came within the timeout
// (plus slack) of start, and that it names the store and what was asked.
func checkDeadline(t *testing.T, what string, start time.Time, err error, mentions ...string) {
	t.Helper()
	took := time.Since(start)
	switch {
	case err == nil:
		t.Errorf("%s on a frozen server succeeded", what)
		return
	case took > testTimeout+slack:
		t.Errorf("%s failed after %v, want at most the timeout %v (+%v): %v", what, took, testTimeout, slack, err)
	case status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("%s = %v, want DEADLINE_EXCEEDED", what, err)
	}
	for _, m := range append(mentions, "grpc store", "timeout") {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("%s error %q does not mention %q", what, err, m)
		}
	}
}

// TestFrozenServer freezes the connection to a storefs server, as SIGSTOP
// does to the process, in the middle of reading a blob: every call, and
// the ReadAt that runs out of received bytes, fails within one timeout,
// however many attempts are allowed.
func TestFrozenServer(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 16<<20)
	rand.Read(big)
	bigDigest := putBlob(t, backend, big)
	lis := tcpListen(t)
	serve(t, lis, backend)
	p := startProxy(t, lis.Addr().String())
	s := open(t, "grpc+http://"+p.lis.Addr().String(), grpcstore.Options{Timeout: testTimeout, Attempts: 20})

	r, err := s.OpenBlob(ctx, bigDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	w, err := s.NewBlobWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	p.freeze()
	// Sequential reads are served from what the transport received
	// before the freeze, until that runs out.
	var off int64
	for {
		off += int64(len(buf))
		if off >= r.Size() {
			t.Fatal("read the whole blob through a frozen connection")
		}
		start := time.Now()
		if _, err := r.ReadAt(buf, off); err != nil {
			checkDeadline(t, "ReadAt mid-blob", start, err, bigDigest.String(), p.lis.Addr().String())
			break
		}
	}
	// Two readers of one BlobReader: the second waits for the first,
	// within the same deadline.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			start := time.Now()
			_, err := r.ReadAt(make([]byte, 100), r.Size()-100)
			checkDeadline(t, "concurrent ReadAt", start, err, bigDigest.String())
		})
	}
	wg.Wait()

	hello := storeclient.HashBytes(storetest.HelloWorld)
	f := storetest.NewFixtures()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"StatBlob", func() error { _, err := s.StatBlob(ctx, hello); return err }},
		{"OpenBlob", func() error { _, err := s.OpenBlob(ctx, hello); return err }},
		{"GetDirectory", func() error { _, err := s.GetDirectory(ctx, f.DirectoryD.Digest()); return err }},
		{"GetDirectoryTree", func() error { _, err := s.GetDirectoryTree(ctx, f.DirectoryD.Digest()); return err }},
		{"PutDirectory", func() error { _, err := s.PutDirectory(ctx, f.DirectoryA); return err }},
		{"ListPathInfos", func() error {
			for _, err := range s.ListPathInfos(ctx) {
				if err != nil {
					return err
				}
			}
			return nil
		}},
		{"BlobWriter", func() error {
			// Writes may fit in the transport's buffers; Commit
			// needs an answer.
			if _, err := w.Write(big); err != nil {
				return err
			}
			_, err := w.Commit()
			return err
		}},
	} {
		start := time.Now()
		checkDeadline(t, tc.name, start, tc.call())
	}

	// Thawed, the store works again.
	p.thaw()
	if n, err := r.ReadAt(buf, off); err != nil || n != len(buf) {
		t.Errorf("ReadAt after the thaw = %d, %v", n, err)
	}
}

// TestStalledStreams checks a server that answers Read but sends nothing,
// and one that stops in the middle of a blob.
func TestStalledStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fake  func(*fakeBlobs)
		reads int // ReadAts that succeed before the stall
	}{
		{"no bytes", func(f *fakeBlobs) { f.silent = true }, 0},
		{"mid-blob", func(f *fakeBlobs) { f.stall = true }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs()
			tc.fake(f)
			d := f.add(storetest.BlobB)
			f.chunks[d] = []storeclient.Digest{d}
			s := open(t, startFake(t, f), grpcstore.Options{Timeout: testTimeout, Attempts: 20, Window: 4096})
			r, err := s.OpenBlob(t.Context(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, 4096)
			for i := range tc.reads {
				if _, err := r.ReadAt(buf, int64(i*len(buf))); err != nil {
					t.Fatalf("ReadAt %d before the stall: %v", i, err)
				}
			}
			start := time.Now()
			_, err = r.ReadAt(buf[:1], 100000)
			checkDeadline(t, "ReadAt", start, err, d.String())
			if n, err := r.ReadAt(buf, r.Size()); n != 0 || err != io.EOF {
				t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
			}
		})
	}
}

// putBlob stores b in s and returns its digest.
func putBlob(t *testing.T, s storeclient.BlobService, b []byte) storeclient.Digest {
	t.Helper()
	w, err := s.NewBlobWriter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

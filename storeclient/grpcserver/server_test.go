package grpcserver_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcserver"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storepb"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start serves store on a loopback listener until the test ends and
// returns a client connection to it.
func start(t *testing.T, store storeclient.Store) *grpc.ClientConn {
	t.Helper()
	lis, err := grpcserver.Listen("", nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- grpcserver.Serve(ctx, lis, store, grpcserver.Options{Logger: quietLogger()}) }()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

func putDirs(ctx context.Context, c castorepb.DirectoryServiceClient, dirs ...*castorepb.Directory) (*castorepb.PutDirectoryResponse, error) {
	stream, err := c.Put(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if err := stream.Send(d); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

func TestDirectoryPutValidation(t *testing.T) {
	f := storetest.NewFixtures()
	unsorted := &castorepb.Directory{Files: []*castorepb.FileNode{
		{Name: []byte("b"), Digest: storeclient.EmptyDigest[:]},
		{Name: []byte("a"), Digest: storeclient.EmptyDigest[:]},
	}}
	wrongSize := &castorepb.Directory{Directories: []*castorepb.DirectoryNode{
		{Name: []byte("keep"), Digest: digestBytes(f.DirectoryWithKeep.Digest()), Size: 5},
	}}
	for _, tc := range []struct {
		name   string
		stored []*storeclient.Directory // in the backend before the call
		send   []*castorepb.Directory
		code   codes.Code
		root   *storeclient.Directory // stored afterwards when OK
	}{
		{name: "leaves first", send: pbs(f.DirectoryA, f.DirectoryB, f.DirectoryD), code: codes.OK, root: f.DirectoryD},
		{name: "child already stored", stored: []*storeclient.Directory{f.DirectoryA}, send: pbs(f.DirectoryB), code: codes.OK, root: f.DirectoryB},
		{name: "duplicates allowed", send: pbs(f.DirectoryA, f.DirectoryA, f.DirectoryC), code: codes.OK, root: f.DirectoryC},
		{name: "out of order", send: pbs(f.DirectoryB, f.DirectoryA), code: codes.InvalidArgument},
		{name: "missing child", send: pbs(f.DirectoryB), code: codes.NotFound},
		{name: "wrong child size", send: append(pbs(f.DirectoryWithKeep), wrongSize), code: codes.InvalidArgument},
		{name: "disconnected", send: pbs(f.DirectoryA, f.DirectoryWithKeep, f.DirectoryB), code: codes.InvalidArgument},
		{name: "unsorted names", send: []*castorepb.Directory{unsorted}, code: codes.InvalidArgument},
		{name: "bad digest length", send: []*castorepb.Directory{{Directories: []*castorepb.DirectoryNode{{Name: []byte("x"), Digest: []byte{1, 2}}}}}, code: codes.InvalidArgument},
		{name: "empty stream", code: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			backend := memory.New()
			for _, d := range tc.stored {
				if _, err := backend.PutDirectory(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			conn := start(t, backend)
			resp, err := putDirs(ctx, castorepb.NewDirectoryServiceClient(conn), tc.send...)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("Put = %v, want code %v", err, tc.code)
			}
			if tc.root == nil {
				// Nothing of a rejected stream is stored.
				for _, d := range tc.send {
					dir, err := storeclient.DirectoryFromProto(d)
					if err != nil {
						continue
					}
					if _, err := backend.GetDirectory(ctx, dir.Digest()); err == nil && !contains(tc.stored, dir) {
						t.Errorf("rejected stream left %s in the store", dir.Digest())
					}
				}
				return
			}
			if want := tc.root.Digest(); !bytes.Equal(resp.GetRootDigest(), want[:]) {
				t.Errorf("root_digest = %x, want %s", resp.GetRootDigest(), want)
			}
			if _, err := backend.GetDirectory(ctx, tc.root.Digest()); err != nil {
				t.Errorf("root not stored: %v", err)
			}
		})
	}
}

func contains(dirs []*storeclient.Directory, d *storeclient.Directory) bool {
	for _, x := range dirs {
		if x.Digest() == d.Digest() {
			return true
		}
	}
	return false
}

func digestBytes(d storeclient.Digest) []byte { return d[:] }

func pbs(dirs ...*storeclient.Directory) []*castorepb.Directory {
	var out []*castorepb.Directory
	for _, d := range dirs {
		out = append(out, d.Proto())
	}
	return out
}

func TestBadRequests(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.PutBlob(ctx, backend, storetest.HelloWorld); err != nil {
		t.Fatal(err)
	}
	conn := start(t, backend)
	blobs := castorepb.NewBlobServiceClient(conn)
	dirs := castorepb.NewDirectoryServiceClient(conn)
	paths := storepb.NewPathInfoServiceClient(conn)
	hello := storeclient.HashBytes(storetest.HelloWorld)
	absent := storeclient.HashBytes([]byte("absent"))

	readErr := func(ctx context.Context, d []byte) error {
		stream, err := blobs.Read(ctx, &castorepb.ReadBlobRequest{Digest: d})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	getDirErr := func(d []byte) error {
		stream, err := dirs.Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d}})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	pi, err := storetest.PathInfoFor(storetest.RootBlobA, storeclient.FileNode(storeclient.HashBytes(storetest.BlobA), 2, false))
	if err != nil {
		t.Fatal(err)
	}
	noNarinfo := pi.Proto()
	noNarinfo.Narinfo = nil
	wrongSize, err := storetest.PathInfoFor(storetest.RootHelloExec, storeclient.FileNode(hello, 13, true))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
	}{
		{"stat short digest", func() error { _, err := blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: []byte{1}}); return err }(), codes.InvalidArgument},
		{"stat absent", func() error { _, err := blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: absent[:]}); return err }(), codes.NotFound},
		{"read absent", readErr(ctx, absent[:]), codes.NotFound},
		{"read short digest", readErr(ctx, []byte("xx")), codes.InvalidArgument},
		{"read offset past end", readErr(metadata.AppendToOutgoingContext(ctx, castorepb.ReadOffsetMetadata, "13"), hello[:]), codes.OutOfRange},
		{"read bad offset", readErr(metadata.AppendToOutgoingContext(ctx, castorepb.ReadOffsetMetadata, "-1"), hello[:]), codes.InvalidArgument},
		{"get directory absent", getDirErr(absent[:]), codes.NotFound},
		{"get directory no digest", getDirErr(nil), codes.InvalidArgument},
		{"get pathinfo short hash", func() error {
			_, err := paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: make([]byte, 19)}})
			return err
		}(), codes.InvalidArgument},
		{"get pathinfo absent", func() error {
			_, err := paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: make([]byte, 20)}})
			return err
		}(), codes.NotFound},
		{"put pathinfo content missing", func() error { _, err := paths.Put(ctx, pi.Proto()); return err }(), codes.NotFound},
		{"put pathinfo without narinfo", func() error { _, err := paths.Put(ctx, noNarinfo); return err }(), codes.InvalidArgument},
		{"put pathinfo wrong blob size", func() error { _, err := paths.Put(ctx, wrongSize.Proto()); return err }(), codes.InvalidArgument},
		{"calculate NAR of an unset node", func() error { _, err := paths.CalculateNAR(ctx, &castorepb.Node{}); return err }(), codes.InvalidArgument},
		{"calculate NAR of a missing directory", func() error {
			_, err := paths.CalculateNAR(ctx, storeclient.NodeProto("", storeclient.DirectoryNode(absent, 2)))
			return err
		}(), codes.NotFound},
	} {
		if got := status.Code(tc.err); got != tc.code {
			t.Errorf("%s: %v, want code %v", tc.name, tc.err, tc.code)
		}
	}
}

// TestBothPackages calls every service under the tvix and the snix method
// paths, and the health service for every name.
func TestBothPackages(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := start(t, backend)
	hello := storeclient.HashBytes(storetest.HelloWorld)
	sp, err := storeclient.ParseStorePathBasename(storetest.RootHelloExec)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"tvix", "snix"} {
		var stat castorepb.StatBlobResponse
		if err := conn.Invoke(ctx, "/"+pkg+".castore.v1.BlobService/Stat", &castorepb.StatBlobRequest{Digest: hello[:], SendChunks: true}, &stat); err != nil {
			t.Fatalf("%s Stat: %v", pkg, err)
		}
		if len(stat.GetChunks()) != 1 || stat.GetChunks()[0].GetSize() != 12 {
			t.Errorf("%s Stat chunks = %v, want the blob as one chunk of 12 bytes", pkg, stat.GetChunks())
		}
		var pi storepb.PathInfo
		if err := conn.Invoke(ctx, "/"+pkg+".store.v1.PathInfoService/Get", &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: sp.Digest[:]}}, &pi); err != nil {
			t.Fatalf("%s PathInfo Get: %v", pkg, err)
		}
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+pkg+".castore.v1.DirectoryService/Get")
		if err != nil {
			t.Fatal(err)
		}
		d := storetest.NewFixtures().DirectoryComplicated.Digest()
		if err := stream.SendMsg(&castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d[:]}, Recursive: true}); err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		n := 0
		for {
			var dir castorepb.Directory
			if err := stream.RecvMsg(&dir); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s Directory Get: %v", pkg, err)
			}
			n++
		}
		if n != 2 {
			t.Errorf("%s recursive Get of COMPLICATED sent %d Directories, want 2", pkg, n)
		}
	}
	hc := healthpb.NewHealthClient(conn)
	for _, name := range []string{"", "tvix.castore.v1.BlobService", "snix.castore.v1.BlobService", "tvix.castore.v1.DirectoryService",
		"snix.castore.v1.DirectoryService", "tvix.store.v1.PathInfoService", "snix.store.v1.PathInfoService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v; want SERVING", name, resp.GetStatus(), err)
		}
	}
}

func TestListen(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		allow []netip.Prefix
		ok    bool
	}{
		{"", nil, true},
		{"127.0.0.1:0", nil, true},
		{"localhost:0", nil, true},
		{":0", nil, false},
		{"0.0.0.0:0", nil, false},
		{"0.0.0.0:0", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, true},
		{"no-port", nil, false},
	} {
		lis, err := grpcserver.Listen(tc.addr, tc.allow, quietLogger())
		if (err == nil) != tc.ok {
			t.Errorf("Listen(%q, %v) = %v, want ok=%v", tc.addr, tc.allow, err, tc.ok)
		}
		if lis != nil {
			lis.Close()
		}
	}
}

// TestHandlerPanicIsOneFailedCall: a store that panics fails each call
// with INTERNAL and a log line with the stack; the server keeps serving.
func TestHandlerPanicIsOneFailedCall(t *testing.T) {
	var logs logBuffer
	lis, err := grpcserver.Listen("", nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	store := vfstest.Panicking(memory.New(), true)
	go func() {
		done <- grpcserver.Serve(ctx, lis, store, grpcserver.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	}()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := storeclient.EmptyDigest
	internal := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Internal {
			t.Errorf("%s: %v, want INTERNAL", what, err)
		}
	}
	_, err = storepb.NewPathInfoServiceClient(conn).Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: make([]byte, 20)}})
	internal("PathInfoService.Get", err)
	_, err = castorepb.NewBlobServiceClient(conn).Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:]})
	internal("BlobService.Stat", err)
	rs, err := castorepb.NewBlobServiceClient(conn).Read(ctx, &castorepb.ReadBlobRequest{Digest: make([]byte, 32)})
	if err == nil {
		_, err = rs.Recv()
	}
	internal("BlobService.Read", err)
	ds, err := castorepb.NewDirectoryServiceClient(conn).Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: make([]byte, 32)}})
	if err == nil {
		_, err = ds.Recv()
	}
	internal("DirectoryService.Get", err)
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check after the panics: %v", err)
	}
	if n := strings.Count(logs.String(), "handler panicked"); n != 4 || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("%d panic lines with stacks, want 4:\n%s", n, logs.String())
	}
}

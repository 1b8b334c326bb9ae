package grpcstore_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/grpcstore"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
)

// Golden wire bytes, from vectors.md.
var (
	hexEmpty       = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	hexWithKeep    = "8b5b5d642b646bb8ed504b0862c39413e87e57491497de7bd075953f7b83810e"
	hexComplicated = "424a7f6ce08d805d15b428062faae96299a1675d708c3a39261afe38cdd04feb"
	// DIRECTORY_WITH_KEEP: one file ".keep" → EMPTY.
	goldenWithKeep = "1229" + "0a052e6b656570" + "1220" + hexEmpty
	// DIRECTORY_COMPLICATED: directories, files, symlinks.
	goldenComplicated = "0a2a" + "0a046b656570" + "1220" + hexWithKeep + "1802" +
		"1229" + "0a052e6b656570" + "1220" + hexEmpty +
		"1a1e" + "0a026161" + "1218" + "2f6e69782f73746f72652f736f6d657768657265656c7365"
)

// rawCodec passes message bytes through untouched, so tests see and send
// exactly the bytes on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = bytes.Clone(data)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// rawServer answers every method with canned message bytes and records
// the method paths and request bytes it saw.
type rawServer struct {
	mu       sync.Mutex
	calls    []string // method + " " + hex of the first request message
	replies  map[string][]string
	tvixOnly bool
}

func (s *rawServer) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var req []byte
	if err := stream.RecvMsg(&req); err != nil && err != io.EOF {
		return err
	}
	s.mu.Lock()
	s.calls = append(s.calls, method+" "+hex.EncodeToString(req))
	s.mu.Unlock()
	if s.tvixOnly && strings.HasPrefix(method, "/snix.") {
		return status.Errorf(codes.Unimplemented, "unknown service %s", method)
	}
	short := method[strings.LastIndex(method[:strings.LastIndex(method, "/")], ".")+1:]
	replies, ok := s.replies[short]
	if !ok {
		return status.Errorf(codes.NotFound, "no canned reply for %s", short)
	}
	for _, r := range replies {
		b, err := hex.DecodeString(r)
		if err != nil {
			return err
		}
		if err := stream.SendMsg(&b); err != nil {
			return err
		}
	}
	return nil
}

func startRaw(t *testing.T, rs *rawServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(rs.handle))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return "grpc+http://" + lis.Addr().String()
}

// TestGoldenClientRequests checks the bytes and method paths the client
// sends, and that it accepts the golden Directory encodings.
func TestGoldenClientRequests(t *testing.T) {
	for _, tc := range []struct {
		query    string
		tvixOnly bool
		pkg      string
	}{
		{"?package=snix", false, "snix"},
		{"?package=tvix", false, "tvix"},
		{"", true, "tvix"}, // auto: falls back from snix on UNIMPLEMENTED
	} {
		t.Run(tc.pkg+tc.query, func(t *testing.T) {
			ctx := t.Context()
			rs := &rawServer{tvixOnly: tc.tvixOnly, replies: map[string][]string{
				"DirectoryService/Get": {goldenComplicated, goldenWithKeep},
			}}
			// A StatBlobResponse listing EMPTY as its one chunk: field 2,
			// ChunkMeta{digest=1}.
			rs.replies["BlobService/Stat"] = []string{"1222" + "0a20" + hexEmpty}
			s := open(t, startRaw(t, rs)+tc.query, grpcstore.Options{})
			d := storeclient.Digest(mustHex(t, hexComplicated))
			tree, err := s.GetDirectoryTree(ctx, d)
			if err != nil {
				t.Fatalf("GetDirectoryTree(COMPLICATED) from golden bytes: %v", err)
			}
			if len(tree) != 2 || tree[1].Digest() != storeclient.Digest(mustHex(t, hexWithKeep)) {
				t.Fatalf("tree = %v", tree)
			}
			if n, err := s.StatBlob(ctx, storeclient.EmptyDigest); err != nil || n != 0 {
				t.Fatalf("StatBlob(EMPTY) = %d, %v", n, err)
			}
			want := []string{
				"/" + tc.pkg + ".castore.v1.DirectoryService/Get 0a20" + hexComplicated + "1001",
				"/" + tc.pkg + ".castore.v1.BlobService/Stat 0a20" + hexEmpty + "1001",
			}
			rs.mu.Lock()
			got := rs.calls
			rs.mu.Unlock()
			if tc.tvixOnly {
				// The first call was tried under snix first.
				want = append([]string{"/snix.castore.v1.DirectoryService/Get 0a20" + hexComplicated + "1001"}, want...)
			}
			if len(got) != len(want) {
				t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for i := range want {
				// Go's protobuf encoder puts a oneof after the other
				// fields, prost (upstream) in number order: both are the
				// same message, so compare decoded.
				if !sameRequest(t, got[i], want[i]) {
					t.Errorf("request %d = %s, want %s", i, got[i], want[i])
				}
			}
			if s.Package() != grpcstore.Package(tc.pkg) {
				t.Errorf("Package() = %q, want %q", s.Package(), tc.pkg)
			}
		})
	}
}

// TestGoldenServerResponses sends golden request bytes to a storefs
// server and checks the response bytes, under both package names.
func TestGoldenServerResponses(t *testing.T) {
	ctx := t.Context()
	backend := memory.New()
	if err := storetest.NewFixtures().Fill(ctx, backend, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	lis := tcpListen(t)
	serve(t, lis, backend)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(method, req string) []string {
		t.Helper()
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
		if err != nil {
			t.Fatal(err)
		}
		b := mustHex(t, req)
		if err := stream.SendMsg(&b); err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		var out []string
		for {
			var m []byte
			if err := stream.RecvMsg(&m); err == io.EOF {
				return out
			} else if err != nil {
				t.Fatalf("%s: %v", method, err)
			}
			out = append(out, hex.EncodeToString(m))
		}
	}
	for _, pkg := range []string{"tvix", "snix"} {
		got := call("/"+pkg+".castore.v1.DirectoryService/Get", "0a20"+hexComplicated+"1001")
		if want := []string{goldenComplicated, goldenWithKeep}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s Get(COMPLICATED, recursive) =\n%v\nwant\n%v", pkg, got, want)
		}
		// CalculateNAR(Node{directory: COMPLICATED, size 8}) → 840 bytes
		// (varint c806) and the vectors.md sha256.
		got = call("/"+pkg+".store.v1.PathInfoService/CalculateNAR", "0a24"+"1220"+hexComplicated+"1808")
		want := "08c806" + "1220" + "ebd52279a8df024c9fd5718de4103bf5e760dc7f2cf49044ee7dea87ab16911a"
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s CalculateNAR(COMPLICATED) = %v, want %s", pkg, got, want)
		}
		hello := storeclient.HashBytes(storetest.HelloWorld)
		got = call("/"+pkg+".castore.v1.BlobService/Read", "0a20"+hello.Hex())
		if len(got) != 1 || got[0] != "0a0c"+hex.EncodeToString(storetest.HelloWorld) {
			t.Errorf("%s Read(HELLOWORLD) = %v", pkg, got)
		}
	}
}

// fakeDirs serves canned Directory streams, to test the client's checks.
type fakeDirs struct {
	send []*storeclient.Directory
	raw  []string // hex messages sent after send
}

func (f *fakeDirs) handle(_ any, stream grpc.ServerStream) error {
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	for _, d := range f.send {
		b := d.Marshal()
		if err := stream.SendMsg(&b); err != nil {
			return err
		}
	}
	for _, r := range f.raw {
		b, _ := hex.DecodeString(r)
		if err := stream.SendMsg(&b); err != nil {
			return err
		}
	}
	return nil
}

func TestDirectoryVerification(t *testing.T) {
	f := storetest.NewFixtures()
	wrongSizeParent := mustDir(t, entry(t, "keep", storeclient.DirectoryNode(f.DirectoryWithKeep.Digest(), 5)))
	for _, tc := range []struct {
		name      string
		recursive bool
		ask       *storeclient.Directory
		send      []*storeclient.Directory
		raw       []string
		wantErr   error // nil: success
	}{
		{"single ok", false, f.DirectoryB, []*storeclient.Directory{f.DirectoryB}, nil, nil},
		{"single wrong digest", false, f.DirectoryB, []*storeclient.Directory{f.DirectoryC}, nil, storeclient.ErrCorrupt},
		{"single extra message", false, f.DirectoryB, []*storeclient.Directory{f.DirectoryB, f.DirectoryA}, nil, storeclient.ErrCorrupt},
		{"single empty stream", false, f.DirectoryB, nil, nil, storeclient.ErrNotFound},
		{"single invalid", false, f.DirectoryB, nil, []string{"1a00"}, storeclient.ErrCorrupt},
		{"tree breadth-first", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryD, f.DirectoryA, f.DirectoryB}, nil, nil},
		{"tree other valid order", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryD, f.DirectoryB, f.DirectoryA}, nil, nil},
		{"tree wrong root", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryC, f.DirectoryA}, nil, storeclient.ErrCorrupt},
		{"tree premature end", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryD, f.DirectoryA}, nil, grpcstore.ErrPrematureEnd},
		{"tree unexpected digest", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryD, f.DirectoryWithKeep, f.DirectoryA, f.DirectoryB}, nil, storeclient.ErrCorrupt},
		{"tree child before parent", true, f.DirectoryD, []*storeclient.Directory{f.DirectoryD, f.DirectoryB, f.DirectoryA, f.DirectoryA}, nil, storeclient.ErrCorrupt},
		{"tree wrong child size", true, wrongSizeParent, []*storeclient.Directory{wrongSizeParent, f.DirectoryWithKeep}, nil, storeclient.ErrCorrupt},
		{"tree empty stream", true, f.DirectoryD, nil, nil, storeclient.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fd := &fakeDirs{send: tc.send, raw: tc.raw}
			srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(fd.handle))
			go srv.Serve(lis)
			defer srv.Stop()
			s := open(t, "grpc+http://"+lis.Addr().String()+"?package=tvix", grpcstore.Options{})
			if tc.recursive {
				_, err = s.GetDirectoryTree(t.Context(), tc.ask.Digest())
			} else {
				_, err = s.GetDirectory(t.Context(), tc.ask.Digest())
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v, want success", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want one wrapping %v", err, tc.wantErr)
			}
			if errors.Is(tc.wantErr, grpcstore.ErrPrematureEnd) && !errors.Is(err, storeclient.ErrCorrupt) {
				t.Errorf("premature end %v does not wrap ErrCorrupt", err)
			}
		})
	}
}

// sameRequest reports whether two "method hex" request records name the
// same method and decode to equal messages.
func sameRequest(t *testing.T, got, want string) bool {
	t.Helper()
	gm, gh, _ := strings.Cut(got, " ")
	wm, wh, _ := strings.Cut(want, " ")
	if gm != wm {
		return false
	}
	var g, w proto.Message
	switch {
	case strings.HasSuffix(gm, "DirectoryService/Get"):
		g, w = &castorepb.GetDirectoryRequest{}, &castorepb.GetDirectoryRequest{}
	case strings.HasSuffix(gm, "BlobService/Stat"):
		g, w = &castorepb.StatBlobRequest{}, &castorepb.StatBlobRequest{}
	default:
		return gh == wh
	}
	if err := proto.Unmarshal(mustHex(t, gh), g); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(mustHex(t, wh), w); err != nil {
		t.Fatal(err)
	}
	return proto.Equal(g, w)
}

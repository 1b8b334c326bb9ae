package virtiofs

import (
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"testing"
	"unsafe"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	storefsfuse "github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// BenchmarkHandleRead128K is one guest READ of 128 KiB (what Linux'
// read-ahead sends) as the transport hands it to the FUSE frontend: a
// request buffer in, a reply header and 32 pages out, over the embedded
// local store's blob file. It is the back-end's cost per READ without the
// rings and eventfds.
func BenchmarkHandleRead128K(b *testing.B) {
	s, err := local.Open(b.Context(), b.TempDir(), local.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const size = 64 << 20
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{'v'}).Read(data)
	if err := storetest.PutBlob(b.Context(), s, data); err != nil {
		b.Fatal(err)
	}
	d := storeclient.HashBytes(data)
	const name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-big"
	pi, _ := storetest.PathInfoFor(name, storeclient.FileNode(d, size, false))
	if err := s.PutPathInfo(b.Context(), pi); err != nil {
		b.Fatal(err)
	}
	fsys, err := vfs.New(s, vfs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	sess := newFuseSession(func() gofuse.RawFileSystem {
		return storefsfuse.NewRawFileSystem(fsys, storefsfuse.Options{})
	}, gofuse.MountOptions{MaxWrite: DefaultMaxWrite}, slog.Default())
	do := func(in []byte, out ...[]byte) []byte {
		c := &chain{in: [][]byte{in}, out: out}
		n := sess.handle(c)
		if _, errno, _ := outHeader(out[0]); errno != 0 || n < outHeaderSize {
			b.Fatalf("opcode %d: errno %d, %d bytes", binary.LittleEndian.Uint32(in[4:]), errno, n)
		}
		return out[0]
	}
	do(initReq(), make([]byte, 16+unsafe.Sizeof(gofuse.InitOut{})))
	e := do(lookupReq(1, name), make([]byte, 16+unsafe.Sizeof(gofuse.EntryOut{})))
	node := (*gofuse.EntryOut)(unsafe.Pointer(&e[16])).NodeId
	o := do(openReq(node), make([]byte, 16+unsafe.Sizeof(gofuse.OpenOut{})))
	fh := (*gofuse.OpenOut)(unsafe.Pointer(&o[16])).Fh
	const chunk = 128 << 10
	// The guest hands a header and 32 pages; pages that are neighbours in
	// its memory reach go-fuse as one buffer (appendGuest joins them).
	scattered := [][]byte{make([]byte, 16)}
	for range 32 {
		scattered = append(scattered, make([]byte, 4096))
	}
	joined := [][]byte{make([]byte, 16), make([]byte, chunk)}
	for _, bc := range []struct {
		name  string
		pages [][]byte
	}{{"scattered", scattered}, {"joined", joined}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(chunk)
			b.ReportAllocs()
			off := uint64(0)
			for b.Loop() {
				do(readReq(node, fh, off, chunk), bc.pages...)
				off = (off + chunk) % size
			}
		})
	}
}

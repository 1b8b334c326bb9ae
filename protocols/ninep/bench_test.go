package ninep_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/vfs"
)

// BenchmarkRead reads a 3 MiB file from a local store over loopback TCP,
// one Tread of msize-11 bytes at a time, with sendfile and copied
// (Options.NoSendfile).
func BenchmarkRead(b *testing.B) {
	fsys, files := localFS(b, vfs.Options{})
	data := files[rootBig1]
	for _, mode := range []struct {
		name string
		opts ninep.Options
	}{{"sendfile", ninep.Options{}}, {"copy", ninep.Options{NoSendfile: true}}} {
		if mode.name == "sendfile" && runtime.GOOS != "linux" {
			continue
		}
		_, addr := startServer(b, fsys, "tcp", mode.opts)
		for _, msize := range []uint32{64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/msize=%dK", mode.name, msize>>10), func(b *testing.B) {
				c := openRaw(b, "tcp", addr, msize, rootBig1)
				count := msize - 11
				b.SetBytes(int64(count))
				buf := make([]byte, msize)
				off := uint64(0)
				for b.Loop() {
					if off+uint64(count) > uint64(len(data)) {
						off = 0
					}
					if err := readInto(c, buf, off, count); err != nil {
						b.Fatalf("read at %d: %v", off, err)
					}
					off += uint64(count)
				}
			})
		}
	}
}

// readInto sends a Tread of count bytes at off on fid 2 and reads its
// Rread, which must be whole, into buf: the client allocates nothing, so
// that the benchmark measures the server.
func readInto(c *rawConn, buf []byte, off uint64, count uint32) error {
	if err := c.send(frame(tread, 1, msg{}.u32(2).u64(off).u32(count))); err != nil {
		return err
	}
	want := 7 + 4 + int(count)
	if _, err := io.ReadFull(c.conn, buf[:7]); err != nil {
		return err
	}
	if size := int(binary.LittleEndian.Uint32(buf)); buf[4] != tread+1 || size != want {
		return fmt.Errorf("reply type %d of %d bytes, want Rread of %d", buf[4], size, want)
	}
	_, err := io.ReadFull(c.conn, buf[:want-7])
	return err
}

// BenchmarkWalkClunk makes a fid by a Twalk of one name and clunks it.
func BenchmarkWalkClunk(b *testing.B) {
	_, addr := startServer(b, fixtureFS(b, vfs.Options{}), "tcp", ninep.Options{})
	c := session(b, addr, 8192)
	for b.Loop() {
		if _, err := c.walk(1, 2, rootKeep); err != nil {
			b.Fatal(err)
		}
		if err := c.clunk(2); err != nil {
			b.Fatal(err)
		}
	}
}

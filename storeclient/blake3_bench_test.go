package storeclient_test

import (
	"fmt"
	"hash"
	"testing"

	lukeblake3 "lukechampine.com/blake3"

	"github.com/storefs/storefs/storeclient"
)

// BenchmarkBLAKE3Streaming compares the two Go BLAKE3 libraries for the
// streaming writes an import makes (a 1 MiB blob fed in writes of various
// sizes). storefs uses zeebo/blake3 (storeclient.NewHasher) because it wins
// here; see docs/dependencies.md.
func BenchmarkBLAKE3Streaming(b *testing.B) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	libs := []struct {
		name string
		new  func() hash.Hash
	}{
		{"zeebo", func() hash.Hash { return storeclient.NewHasher() }},
		{"lukechampine", func() hash.Hash { return lukeblake3.New(32, nil) }},
	}
	for _, write := range []int{64, 1024, 16 << 10, 256 << 10} {
		for _, lib := range libs {
			b.Run(fmt.Sprintf("write=%d/%s", write, lib.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for i := 0; i < b.N; i++ {
					h := lib.new()
					for off := 0; off < len(data); off += write {
						h.Write(data[off:min(off+write, len(data))])
					}
					h.Sum(nil)
				}
			})
		}
	}
}

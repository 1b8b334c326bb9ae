package grpcstore

import (
	"sync"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// Bounds of a Store's blobCache.
const (
	// cacheEntries is how many blobs it describes.
	cacheEntries = 4096
	// cacheChunks is how many chunks of chunk lists it holds in all
	// (48 bytes each: 3 MiB).
	cacheChunks = 64 << 10
	// noOutboardTTL is how long an answer without an outboard stands: a
	// server may compute outboards later, or have them for some blobs
	// only, so the answer is remembered per blob and for a while.
	noOutboardTTL = time.Minute
)

// blobInfo is what a server said about one blob.
type blobInfo struct {
	// size is the blob's length, from Stat's chunk list or measured;
	// -1 while unknown.
	size int64
	// segs is the chunk list (more than one chunk), shared by the
	// readers of the blob and never modified; nil to read the blob as
	// one segment.
	segs []segment
	// noOutboard is when the server last answered send_bao without an
	// outboard; zero if it did not.
	noOutboard time.Time
}

// blobCache remembers what a server said about blobs, so that a blob is
// asked about (or measured) once, not at every open. Blobs are content
// addressed: a size or chunk list, once learned, stays true. When full, an
// arbitrary entry makes room.
type blobCache struct {
	mu     sync.Mutex
	m      map[storeclient.Digest]blobInfo
	chunks int // len(segs) summed over m
}

func (c *blobCache) get(d storeclient.Digest) (blobInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	info, ok := c.m[d]
	return info, ok
}

// update applies fn to the entry of d (size -1 if new) and stores it.
func (c *blobCache) update(d storeclient.Digest, fn func(*blobInfo)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[storeclient.Digest]blobInfo)
	}
	info, ok := c.m[d]
	if !ok {
		info.size = -1
	}
	c.chunks -= len(info.segs)
	fn(&info)
	if len(info.segs) > cacheChunks/4 {
		// One blob must not take the room of many.
		info.segs = nil
	}
	delete(c.m, d)
	for k, v := range c.m {
		if len(c.m) < cacheEntries && c.chunks+len(info.segs) <= cacheChunks {
			break
		}
		delete(c.m, k)
		c.chunks -= len(v.segs)
	}
	c.m[d] = info
	c.chunks += len(info.segs)
}

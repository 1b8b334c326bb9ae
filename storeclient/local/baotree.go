package local

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"lukechampine.com/blake3/guts"

	"github.com/storefs/storefs/storeclient"
)

// The bao tree of storeclient's outboard format (storeclient/bao.go), built
// and checked here without the blob's bytes at hand: treeHasher computes
// an outboard from a blob as it is written, whatever the sizes of the
// writes, and checkOutboard checks every byte of a stored outboard against
// the blob's digest alone.

// groupChunks is the number of BLAKE3 chunks in a chunk group.
const groupChunks = storeclient.BaoGroupSize / guts.ChunkSize

// treeHasher computes the chaining value of every chunk group of a blob as
// its bytes are written, and at the end the blob's outboard. It holds back
// the last full group until more bytes come: a blob of exactly one group
// hashes it as the root. It gives up (finish returns no outboard) past
// the size whose outboard storeclient.MaxOutboardSize allows.
type treeHasher struct {
	// group holds the bytes of the group being filled; never more than
	// one group, and full only until the next Write.
	group []byte
	cvs   [][8]uint32
	size  int64
	// tooBig is set once the blob outgrew storeclient.MaxOutboardSize.
	tooBig bool
}

func newTreeHasher() *treeHasher {
	return &treeHasher{group: make([]byte, 0, storeclient.BaoGroupSize)}
}

// Write adds p to the blob. It never fails.
func (h *treeHasher) Write(p []byte) (int, error) {
	n := len(p)
	h.size += int64(n)
	if h.tooBig {
		return n, nil
	}
	if storeclient.OutboardSize(h.size) > storeclient.MaxOutboardSize {
		h.tooBig, h.cvs, h.group = true, nil, nil
		return n, nil
	}
	for len(p) > 0 {
		if len(h.group) == storeclient.BaoGroupSize {
			// More bytes follow, so the held group is not the root.
			h.addGroup(h.group)
			h.group = h.group[:0]
		}
		if len(h.group) == 0 && len(p) > storeclient.BaoGroupSize {
			h.addGroup(p[:storeclient.BaoGroupSize]) // no copy for whole groups
			p = p[storeclient.BaoGroupSize:]
			continue
		}
		k := copy(h.group[len(h.group):cap(h.group)], p)
		h.group = h.group[:len(h.group)+k]
		p = p[k:]
	}
	return n, nil
}

func (h *treeHasher) addGroup(g []byte) {
	h.cvs = append(h.cvs, guts.ChainingValue(compressGroup(g, uint64(len(h.cvs))*groupChunks)))
}

// finish returns the outboard of the bytes written and their digest; ok
// is false if the blob is too large for an outboard.
func (h *treeHasher) finish() (enc []byte, root storeclient.Digest, ok bool) {
	if h.tooBig {
		return nil, storeclient.Digest{}, false
	}
	enc = make([]byte, storeclient.OutboardSize(h.size))
	binary.LittleEndian.PutUint64(enc, uint64(h.size))
	last := compressGroup(h.group, uint64(len(h.cvs))*groupChunks)
	if len(h.cvs) == 0 {
		last.Flags |= guts.FlagRoot
		return enc, cvDigest(guts.ChainingValue(last)), true
	}
	cvs := append(h.cvs, guts.ChainingValue(last))
	return enc, cvDigest(encodeTree(enc[8:], cvs, guts.FlagRoot)), true
}

// encodeTree writes the parent nodes of the tree over the chaining values
// of cvs (at least two groups) into enc in pre-order and returns the
// chaining value of its top node, computed with flags.
func encodeTree(enc []byte, cvs [][8]uint32, flags uint32) [8]uint32 {
	if len(cvs) == 1 {
		return cvs[0]
	}
	mid := leftGroups(int64(len(cvs)))
	l := encodeTree(enc[64:], cvs[:mid], 0)
	r := encodeTree(enc[64*mid:], cvs[mid:], 0)
	putCV(enc[0:32], l)
	putCV(enc[32:64], r)
	return guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, flags))
}

// leftGroups returns how many of n > 1 groups the left subtree of their
// node holds: the largest power of two below n, as in BLAKE3's tree. The
// left subtree's parent nodes then take 64*(leftGroups-1) bytes.
func leftGroups(n int64) int64 {
	return 1 << (bits.Len64(uint64(n-1)) - 1)
}

// checkOutboard checks enc as the outboard of blob d of size bytes: its
// header and length (storeclient.ParseOutboard), and every parent node
// against the chaining value its parent records for it, up to the root
// (the digest). So every byte of enc is checked, and an outboard that
// passes is the blob's (the chaining values of the groups are fixed by the
// digest as firmly as the blob's bytes are). It costs one BLAKE3
// compression per 64 bytes of enc: about 4 ms for the outboard (1 MiB)
// of a GiB of blob. An error wraps storeclient.ErrCorrupt.
func checkOutboard(d storeclient.Digest, size int64, enc []byte) error {
	if _, err := storeclient.ParseOutboard(d, size, enc); err != nil {
		return err
	}
	groups := (size + storeclient.BaoGroupSize - 1) / storeclient.BaoGroupSize
	if groups <= 1 {
		return nil
	}
	if _, ok := checkTree(enc[8:], groups, digestCV(d), guts.FlagRoot); !ok {
		return fmt.Errorf("outboard of blob %s: a node does not hash to the value its parent records: %w", d, storeclient.ErrCorrupt)
	}
	return nil
}

// checkTree checks the parent nodes at the start of enc, the pre-order
// encoding of a subtree of groups (at least two) whose top node hashes,
// with flags, to cv. It returns the rest of enc.
func checkTree(enc []byte, groups int64, cv [8]uint32, flags uint32) ([]byte, bool) {
	if groups == 1 {
		return enc, true
	}
	l, r := bytesCV(enc[0:32]), bytesCV(enc[32:64])
	if guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, flags)) != cv {
		return nil, false
	}
	mid := leftGroups(groups)
	rest, ok := checkTree(enc[64:], mid, l, 0)
	if !ok {
		return nil, false
	}
	return checkTree(rest, groups-mid, r, 0)
}

// compressGroup returns the node of one chunk group (at most 64 chunks)
// whose first chunk has the number counter. It is
// lukechampine.com/blake3/bao's compressGroup (MIT licence), which is not
// exported: the chunks are compressed MaxSIMD at a time and merged.
func compressGroup(p []byte, counter uint64) guts.Node {
	var stack [54 - guts.MaxSIMD][8]uint32
	var sc uint64
	pushSubtree := func(cv [8]uint32) {
		i := 0
		for sc&(1<<i) != 0 {
			cv = guts.ChainingValue(guts.ParentNode(stack[i], cv, &guts.IV, 0))
			i++
		}
		stack[i] = cv
		sc++
	}
	var buf [guts.MaxSIMD * guts.ChunkSize]byte
	var buflen int
	for len(p) > 0 {
		if buflen == len(buf) {
			pushSubtree(guts.ChainingValue(guts.CompressBuffer(&buf, buflen, &guts.IV, counter+(sc*guts.MaxSIMD), 0)))
			buflen = 0
		}
		n := copy(buf[buflen:], p)
		buflen += n
		p = p[n:]
	}
	n := guts.CompressBuffer(&buf, buflen, &guts.IV, counter+(sc*guts.MaxSIMD), 0)
	for i := bits.TrailingZeros64(sc); i < bits.Len64(sc); i++ {
		if sc&(1<<i) != 0 {
			n = guts.ParentNode(stack[i], guts.ChainingValue(n), &guts.IV, 0)
		}
	}
	return n
}

func bytesCV(b []byte) (cv [8]uint32) {
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}

func putCV(b []byte, cv [8]uint32) {
	for i, w := range cv {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
}

func digestCV(d storeclient.Digest) [8]uint32 { return bytesCV(d[:]) }

func cvDigest(cv [8]uint32) (d storeclient.Digest) {
	putCV(d[:], cv)
	return d
}

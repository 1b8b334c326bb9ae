package vfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/storefs/storefs/storeclient"
)

// MaxHandleLen is the longest handle Node.Handle returns (NFSv3 allows 64).
const MaxHandleLen = 45

// Handle tags: the first byte of every handle. A later format gets new tags;
// these keep their meaning.
const (
	tagRoot    = 0x01 // 1 byte
	tagTop     = 0x02 // + store path digest (20) = 21 bytes
	tagDir     = 0x03 // + digest (32) + size (8, big endian) = 41 bytes
	tagFile    = 0x04 // + digest (32) + size (8) + flags (1, bit 0 executable) = 42 bytes
	tagSymlink = 0x05 // + parent digest (32) + parent size (8) + index (4) = 45 bytes
)

const (
	lenRoot    = 1
	lenTop     = 1 + storeclient.StorePathDigestSize
	lenDir     = 1 + storeclient.DigestSize + 8
	lenFile    = lenDir + 1
	lenSymlink = 1 + storeclient.DigestSize + 8 + 4
)

// Handle returns n's opaque handle (at most MaxHandleLen bytes), for NFS
// file handles and any other protocol that names nodes by bytes. It is a
// pure function of the content (and, for a PathInfo's root, of the store
// path), so it is the same after a restart and on every daemon serving the
// same store; ResolveHandle turns it back into the Node without any table.
func (n Node) Handle() []byte { return n.AppendHandle(make([]byte, 0, MaxHandleLen)) }

// AppendHandle appends n's handle to b.
func (n Node) AppendHandle(b []byte) []byte {
	switch n.place {
	case placeRoot:
		return append(b, tagRoot)
	case placeTop:
		b = append(b, tagTop)
		return append(b, n.ref[:storeclient.StorePathDigestSize]...)
	case placeChild:
		switch n.node.Kind() {
		case storeclient.KindDirectory:
			d := n.node.Digest()
			b = append(b, tagDir)
			b = append(b, d[:]...)
			return binary.BigEndian.AppendUint64(b, n.node.Size())
		case storeclient.KindFile:
			d := n.node.Digest()
			b = append(b, tagFile)
			b = append(b, d[:]...)
			b = binary.BigEndian.AppendUint64(b, n.node.Size())
			var flags byte
			if n.node.Executable() {
				flags |= 1
			}
			return append(b, flags)
		case storeclient.KindSymlink:
			b = append(b, tagSymlink)
			b = append(b, n.ref[:]...)
			b = binary.BigEndian.AppendUint64(b, n.parentSize)
			return binary.BigEndian.AppendUint32(b, n.index)
		}
	}
	return b
}

// errBadHandle is the cause of ESTALE for handles that do not decode.
var errBadHandle = errors.New("not a storefs handle")

// ResolveHandle returns the Node a handle names. It keeps no table: the
// handle is decoded and checked against the store — a PathInfo root handle
// looks the PathInfo up, a directory handle reads the Directory (usually
// from the cache), a file handle stats the blob (size must match), a
// symlink handle reads its parent Directory. A handle that does not decode,
// or names something the store does not hold (or cannot produce now: a
// missing, corrupt or unreachable object), fails with ESTALE
// (NFS3ERR_STALE), except that a PathInfo lookup the backend fails is EIO.
// Frontends that resolve the same handles often may keep a bounded cache of
// handle to Node.
func (f *FS) ResolveHandle(ctx context.Context, h []byte) (Node, error) {
	t0 := f.opStart(OpResolveHandle)
	n, err := f.resolveHandle(ctx, h)
	f.opEnd(OpResolveHandle, t0, 0, err)
	return n, err
}

func (f *FS) resolveHandle(ctx context.Context, h []byte) (Node, error) {
	stale := func(cause error) (Node, error) {
		return Node{}, newError("resolve handle", fmt.Sprintf("%x", h), syscall.ESTALE, cause)
	}
	if len(h) == 0 {
		return stale(errBadHandle)
	}
	switch h[0] {
	case tagRoot:
		if len(h) != lenRoot {
			return stale(errBadHandle)
		}
		return rootNode(), nil
	case tagTop:
		if len(h) != lenTop {
			return stale(errBadHandle)
		}
		sp := storeclient.StorePathDigest(h[1:])
		pi, err := f.getPathInfo(ctx, sp)
		if errors.Is(err, storeclient.ErrNotFound) {
			return stale(err)
		}
		if err != nil {
			f.metadataFailed("path info", sp.String(), err)
			return Node{}, backendError("resolve handle", sp.String(), err)
		}
		return topNode(sp, pi.Node), nil
	case tagDir:
		if len(h) != lenDir {
			return stale(errBadHandle)
		}
		d := storeclient.Digest(h[1 : 1+storeclient.DigestSize])
		size := binary.BigEndian.Uint64(h[1+storeclient.DigestSize:])
		if err := f.checkDirectory(ctx, d, size); err != nil {
			return stale(err)
		}
		return handleChild(storeclient.DirectoryNode(d, size)), nil
	case tagFile:
		if len(h) != lenFile || h[lenFile-1]&^1 != 0 {
			return stale(errBadHandle)
		}
		d := storeclient.Digest(h[1 : 1+storeclient.DigestSize])
		size := binary.BigEndian.Uint64(h[1+storeclient.DigestSize:])
		if err := f.checkBlob(ctx, d, size); err != nil {
			return stale(err)
		}
		return handleChild(storeclient.FileNode(d, size, h[lenFile-1]&1 != 0)), nil
	case tagSymlink:
		if len(h) != lenSymlink {
			return stale(errBadHandle)
		}
		pd := storeclient.Digest(h[1 : 1+storeclient.DigestSize])
		psize := binary.BigEndian.Uint64(h[1+storeclient.DigestSize:])
		idx := binary.BigEndian.Uint32(h[1+storeclient.DigestSize+8:])
		if err := f.checkDirectory(ctx, pd, psize); err != nil {
			return stale(err)
		}
		parent := storeclient.DirectoryNode(pd, psize)
		dir, err := f.directory(ctx, "resolve handle", parent)
		if err != nil {
			return stale(err)
		}
		es := dir.Entries()
		if int64(idx) >= int64(len(es)) || es[idx].Node.Kind() != storeclient.KindSymlink {
			return stale(fmt.Errorf("directory %s has no symlink at index %d", pd, idx))
		}
		return childNode(parent, int(idx), es[idx].Node), nil
	}
	return stale(errBadHandle)
}

// handleChild makes the Node of a directory or file handle. Such nodes need
// no parent: their handle is their content.
func handleChild(sn storeclient.Node) Node {
	return Node{node: sn, place: placeChild, ino: inoOf(sn)}
}

// checkDirectory confirms that the store holds Directory d with the given
// size. A size that disagrees is a forged or mistaken handle, not damage
// in the store: it is only ESTALE, never a corruption alarm in the log.
func (f *FS) checkDirectory(ctx context.Context, d storeclient.Digest, size uint64) error {
	cd, err := f.cachedDirectory(ctx, "resolve handle", d)
	if err != nil {
		return err
	}
	if !cd.fits(size, f.opts.LegacySizes) {
		return fmt.Errorf("directory %s has size %d, the handle records %d", d, cd.dir.Size(), size)
	}
	return nil
}

// checkBlob confirms that the store holds blob d with the given size.
func (f *FS) checkBlob(ctx context.Context, d storeclient.Digest, size uint64) error {
	if size == 0 && d == storeclient.EmptyDigest {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	t0 := f.backendStart()
	got, err := storeCall(f.fsState, BackendStatBlob, func() (int64, error) { return f.store.StatBlob(ctx, d) })
	f.backendEnd(BackendStatBlob, t0, err)
	if err != nil {
		return err
	}
	if got < 0 || uint64(got) != size {
		return fmt.Errorf("blob %s has %d bytes, the handle records %d", d, got, size)
	}
	return nil
}

package nar

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/storefs/storefs/storeclient"
)

// Source is what WriteNAR reads: blobs and Directories. Every
// storeclient.Store is one.
type Source interface {
	OpenBlob(ctx context.Context, d storeclient.Digest) (storeclient.BlobReader, error)
	GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error)
}

// copyBufSize is the chunk in which blob contents are streamed.
const copyBufSize = 256 << 10

// WriteNAR writes the NAR serialisation of the tree rooted at node to w.
// Blob contents are streamed in chunks, never held whole; each blob's size
// must match its node, and unless src is a trusted store
// (storeclient.IsTrustedLocal; a Source that is not a whole
// storeclient.BlobService is not) its BLAKE3 digest is checked as it streams, so a corrupt blob ends the NAR
// with an error wrapping storeclient.ErrCorrupt.
func WriteNAR(ctx context.Context, w io.Writer, src Source, node storeclient.Node) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	nw := &narWriter{src: src, enc: NewEncoder(bw), buf: make([]byte, copyBufSize)}
	if bs, ok := src.(storeclient.BlobService); ok {
		nw.trusted = storeclient.IsTrustedLocal(bs)
	}
	if err := nw.node(ctx, node, "/"); err != nil {
		return err
	}
	if err := nw.enc.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write NAR: %w", err)
	}
	return nil
}

// Hash returns the size and sha256 of the NAR serialisation of the tree
// rooted at node, as WriteNAR would write it.
func Hash(ctx context.Context, src Source, node storeclient.Node) (uint64, [sha256.Size]byte, error) {
	h := sha256.New()
	cw := &countingWriter{w: h}
	var sum [sha256.Size]byte
	if err := WriteNAR(ctx, cw, src, node); err != nil {
		return 0, sum, err
	}
	h.Sum(sum[:0])
	return cw.n, sum, nil
}

type countingWriter struct {
	w io.Writer
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

type narWriter struct {
	src     Source
	enc     *Encoder
	buf     []byte
	trusted bool
}

func (nw *narWriter) node(ctx context.Context, n storeclient.Node, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch n.Kind() {
	case storeclient.KindSymlink:
		return nw.enc.Symlink(string(n.Target()))
	case storeclient.KindFile:
		return nw.file(ctx, n, path)
	case storeclient.KindDirectory:
		dir, err := nw.src.GetDirectory(ctx, n.Digest())
		if err != nil {
			return fmt.Errorf("NAR of %q: %w", path, err)
		}
		if dir.Size() != n.Size() {
			return fmt.Errorf("NAR of %q: directory %s has size %d, its node says %d: %w",
				path, n.Digest(), dir.Size(), n.Size(), storeclient.ErrCorrupt)
		}
		if err := nw.enc.Directory(); err != nil {
			return err
		}
		for _, e := range dir.Entries() {
			if err := nw.enc.Entry(string(e.Name)); err != nil {
				return err
			}
			if err := nw.node(ctx, e.Node, joinPath(path, string(e.Name))); err != nil {
				return err
			}
		}
		return nw.enc.End()
	}
	return fmt.Errorf("NAR of %q: invalid node", path)
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func (nw *narWriter) file(ctx context.Context, n storeclient.Node, path string) error {
	size := n.Size()
	if size == 0 && n.Digest() == storeclient.EmptyDigest {
		return nw.enc.File(0, n.Executable())
	}
	br, err := nw.src.OpenBlob(ctx, n.Digest())
	if err != nil {
		return fmt.Errorf("NAR of %q: %w", path, err)
	}
	defer br.Close()
	if got := br.Size(); got < 0 || uint64(got) != size {
		return fmt.Errorf("NAR of %q: blob %s has %d bytes, its node says %d: %w",
			path, n.Digest(), got, size, storeclient.ErrCorrupt)
	}
	if err := nw.enc.File(size, n.Executable()); err != nil {
		return err
	}
	var h interface {
		io.Writer
		Sum([]byte) []byte
	}
	if !nw.trusted {
		h = storeclient.NewHasher()
	}
	var off uint64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := nw.buf[:min(uint64(len(nw.buf)), size-off)]
		k, err := br.ReadAt(chunk, int64(off))
		if k < len(chunk) {
			if err == nil || err == io.EOF {
				err = fmt.Errorf("blob %s ends at %d bytes, its node says %d: %w", n.Digest(), off+uint64(k), size, storeclient.ErrCorrupt)
			}
			return fmt.Errorf("NAR of %q: read: %w", path, err)
		}
		if h != nil {
			h.Write(chunk)
		}
		if _, err := nw.enc.Write(chunk); err != nil {
			return err
		}
		off += uint64(k)
	}
	if h != nil {
		if got := storeclient.Digest(h.Sum(nil)); got != n.Digest() {
			return fmt.Errorf("NAR of %q: blob content hashes to %s, want %s: %w",
				path, got, n.Digest(), storeclient.ErrCorrupt)
		}
	}
	return nil
}

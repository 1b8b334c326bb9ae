package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/semaphore"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// Magic bytes of the compressed forms ImportNAR recognises.
const (
	xzMagic   = "\xfd7zXZ\x00"
	zstdMagic = "\x28\xb5\x2f\xfd"
)

// Decompress returns a reader of the NAR in r, which may be plain or
// compressed with xz or zstd; the format is recognised by its magic
// bytes, not a file name. The returned close function releases the
// decompressor.
func Decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(xzMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read NAR: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte(xzMagic)):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return &wrapErr{r: xr, what: "xz"}, func() {}, nil
	case bytes.HasPrefix(head, []byte(zstdMagic)):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return &wrapErr{r: zr, what: "zstd"}, zr.Close, nil
	}
	return br, func() {}, nil
}

// wrapErr names the decompressor in its errors, except EOF.
type wrapErr struct {
	r    io.Reader
	what string
}

func (w *wrapErr) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: %w", w.what, err)
	}
	return n, err
}

// hashingReader feeds everything read through it into a hash and counts it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n uint64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += uint64(n)
	return n, err
}

// ImportNAR imports the NAR read from r (plain, xz or zstd, recognised by
// its magic bytes) under the store path name name, and returns the
// PathInfo of the path `nix-store --add` gives the unpacked tree. The NAR
// must be canonical (the Reader of package nar is strict), so its sha256,
// computed over the stream as it is read, is the unpacked tree's NAR hash.
// A malformed NAR is an error wrapping nar.ErrMalformed; nothing of it is
// made reachable by a PathInfo.
func ImportNAR(ctx context.Context, store storeclient.Store, r io.Reader, name string) (*storeclient.PathInfo, error) {
	if _, err := storeclient.NewStorePath(storeclient.StorePathDigest{}, name); err != nil {
		return nil, fmt.Errorf("import NAR: %w", err)
	}
	dr, closeDec, err := Decompress(r)
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	defer closeDec()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	par := runtime.GOMAXPROCS(0)
	ni := &narImport{
		store:  store,
		budget: semaphore.NewWeighted(readAheadBytes),
		jobs:   newBatcher(par),
	}
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() { runBatches(ctx, ni.jobs.out, func(j *fileJob) error { return ni.store1(ctx, j) }) })
	}
	hr := &hashingReader{r: dr, h: sha256.New()}
	info, err := ni.run(ctx, hr, name)
	ni.jobs.close()
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("import NAR %s: %w", quote(name), err)
	}
	return info, nil
}

// narImport is the state of one ImportNAR.
type narImport struct {
	store  storeclient.Store
	budget *semaphore.Weighted
	jobs   *batcher // owned by run
	pool   bufPool
	empty  emptyBlob
}

// store1 hashes and stores the blob of one small file, and frees its
// contents.
func (ni *narImport) store1(ctx context.Context, j *fileJob) error {
	j.digest = storeclient.HashBytes(j.data)
	err := putBlob(ctx, ni.store, j.data, j.digest)
	ni.pool.put(j.data)
	j.data = nil
	ni.budget.Release(int64(j.size))
	return err
}

func (ni *narImport) run(ctx context.Context, hr *hashingReader, name string) (*storeclient.PathInfo, error) {
	nr := nar.NewReader(hr)
	b := &treeBuilder{up: newDirUploader(ni.store)}
	for {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch h.Type {
		case nar.TypeDirectory:
			b.beginDir(h.Name)
		case nar.TypeEndDirectory:
			// The directory's node needs its files' digests.
			if err = ni.jobs.flush(ctx); err == nil {
				err = b.endDir(ctx)
			}
		case nar.TypeSymlink:
			var t storeclient.SymlinkTarget
			if t, err = storeclient.NewSymlinkTarget(h.Target); err == nil {
				err = b.add(h.Name, storeclient.SymlinkNode(t))
			}
		case nar.TypeRegular:
			err = ni.file(ctx, nr, h, b)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ni.jobs.flush(ctx); err != nil {
		return nil, err
	}
	var sum [sha256.Size]byte
	hr.h.Sum(sum[:0])
	return finish(ctx, ni.store, b, name, hr.n, sum)
}

func (ni *narImport) file(ctx context.Context, nr *nar.Reader, h *nar.Header, b *treeBuilder) error {
	switch {
	case h.Size == 0:
		if err := ni.empty.ensure(ctx, ni.store); err != nil {
			return err
		}
		return b.add(h.Name, storeclient.FileNode(storeclient.EmptyDigest, 0, h.Executable))
	case h.Size <= smallFileMax:
		if err := acquire(ctx, ni.budget, h.Size, ni.jobs); err != nil {
			return err
		}
		data := ni.pool.get(int(h.Size))
		if _, err := io.ReadFull(nr, data); err != nil {
			ni.pool.put(data)
			ni.budget.Release(int64(h.Size))
			return err
		}
		j := &fileJob{size: h.Size, executable: h.Executable, data: data}
		if err := ni.jobs.add(ctx, j); err != nil {
			return err // canceled: the batch was not sent
		}
		return b.addPending(h.Name, j)
	}
	// The workers store the pending small files while this one streams.
	if err := ni.jobs.flush(ctx); err != nil {
		return err
	}
	d, err := streamBlob(ctx, ni.store, nr, h.Size, nil, "file "+quote(h.Name))
	if err != nil {
		return err
	}
	return b.add(h.Name, storeclient.FileNode(d, h.Size, h.Executable))
}

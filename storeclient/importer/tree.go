package importer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storepb"
)

// DirectoryBatchPutter is implemented by stores that can store many
// Directories at once (one transaction, one fsync), such as the local
// store. dirs come leaves first; either all are stored or none.
type DirectoryBatchPutter interface {
	PutDirectories(ctx context.Context, dirs []*storeclient.Directory) error
}

// dirBatchSize is how many Directories are put at once.
const dirBatchSize = 512

// dirUploader stores Directories leaves first, in batches, skipping
// Directories it has already stored during this import.
type dirUploader struct {
	store   storeclient.Store
	batcher DirectoryBatchPutter
	batch   []*storeclient.Directory
	seen    map[storeclient.Digest]struct{}
}

func newDirUploader(store storeclient.Store) *dirUploader {
	u := &dirUploader{store: store, seen: make(map[storeclient.Digest]struct{})}
	u.batcher, _ = store.(DirectoryBatchPutter)
	return u
}

func (u *dirUploader) add(ctx context.Context, d *storeclient.Directory) error {
	dg := d.Digest()
	if _, ok := u.seen[dg]; ok {
		return nil
	}
	u.seen[dg] = struct{}{}
	u.batch = append(u.batch, d)
	if len(u.batch) >= dirBatchSize {
		return u.flush(ctx)
	}
	return nil
}

func (u *dirUploader) flush(ctx context.Context) error {
	if len(u.batch) == 0 {
		return nil
	}
	defer func() { clear(u.batch); u.batch = u.batch[:0] }()
	if u.batcher != nil {
		if err := u.batcher.PutDirectories(ctx, u.batch); err != nil {
			return fmt.Errorf("put %d directories: %w", len(u.batch), err)
		}
		return nil
	}
	for _, d := range u.batch {
		if _, err := u.store.PutDirectory(ctx, d); err != nil {
			return fmt.Errorf("put directory %s: %w", d.Digest(), err)
		}
	}
	return nil
}

// treeBuilder assembles castore Directories from nodes that arrive in NAR
// order, and hands each finished Directory to a dirUploader, so
// Directories are stored leaves first. A file node may arrive as a pending
// worker job; it is waited for when its directory (or the root) is done.
type treeBuilder struct {
	up      *dirUploader
	stack   []openDir
	root    pendingEntry
	hasRoot bool
}

type openDir struct {
	name    string
	entries []pendingEntry
}

type pendingEntry struct {
	name storeclient.Name
	node storeclient.Node
	job  *fileJob // set while the node is not known yet
}

func (e *pendingEntry) resolve(ctx context.Context) error {
	if e.job == nil {
		return nil
	}
	if err := e.job.wait(ctx); err != nil {
		return err
	}
	e.node, e.job = e.job.node(), nil
	return nil
}

// depth returns the number of open directories.
func (b *treeBuilder) depth() int { return len(b.stack) }

func (b *treeBuilder) beginDir(name string) {
	b.stack = append(b.stack, openDir{name: name})
}

// add records a finished node: an entry of the innermost open directory,
// or the root.
func (b *treeBuilder) add(name string, n storeclient.Node) error {
	return b.addEntry(name, pendingEntry{node: n})
}

// addPending records a file whose blob a worker is still storing.
func (b *treeBuilder) addPending(name string, j *fileJob) error {
	return b.addEntry(name, pendingEntry{job: j})
}

func (b *treeBuilder) addEntry(name string, e pendingEntry) error {
	if len(b.stack) == 0 {
		b.root, b.hasRoot = e, true
		return nil
	}
	nm, err := storeclient.NewName(name)
	if err != nil {
		return fmt.Errorf("entry %s: %w", strconv.Quote(name), err)
	}
	e.name = nm
	top := &b.stack[len(b.stack)-1]
	top.entries = append(top.entries, e)
	return nil
}

// endDir finishes the innermost open directory.
func (b *treeBuilder) endDir(ctx context.Context) error {
	top := b.stack[len(b.stack)-1]
	b.stack = b.stack[:len(b.stack)-1]
	entries := make([]storeclient.Entry, len(top.entries))
	for i := range top.entries {
		e := &top.entries[i]
		if err := e.resolve(ctx); err != nil {
			return err
		}
		entries[i] = storeclient.Entry{Name: e.name, Node: e.node}
	}
	d, err := storeclient.NewDirectory(entries...)
	if err != nil {
		return fmt.Errorf("directory %s: %w", strconv.Quote(top.name), err)
	}
	if err := b.up.add(ctx, d); err != nil {
		return err
	}
	return b.add(top.name, storeclient.DirectoryNode(d.Digest(), d.Size()))
}

// SmallBlobPutter is implemented by stores that can store a blob held in
// memory and already hashed in one call, such as the local store. The
// store keeps data under d unless it has a blob of that digest and length
// already; d is the BLAKE3 digest of data, computed by the importer, which
// needs it for the file's node anyway, so the contents are hashed once.
type SmallBlobPutter interface {
	PutSmallBlob(ctx context.Context, d storeclient.Digest, data []byte) error
}

// putBlob stores data, whose BLAKE3 digest is d, as a blob unless the
// store has it already. Through a blob writer, it checks the digest the
// store computes.
func putBlob(ctx context.Context, store storeclient.BlobService, data []byte, d storeclient.Digest) error {
	if p, ok := store.(SmallBlobPutter); ok {
		return p.PutSmallBlob(ctx, d, data) // its errors name the blob
	}
	size, err := store.StatBlob(ctx, d)
	if err == nil && size == int64(len(data)) {
		return nil
	}
	if err != nil && !errors.Is(err, storeclient.ErrNotFound) {
		return fmt.Errorf("stat blob %s: %w", d, err)
	}
	w, err := store.NewBlobWriter(ctx)
	if err != nil {
		return fmt.Errorf("store blob %s: %w", d, err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("store blob %s: %w", d, err)
	}
	got, err := w.Commit()
	if err != nil {
		return fmt.Errorf("store blob %s: %w", d, err)
	}
	if got != d {
		return fmt.Errorf("store blob: the store says %s, the importer hashed %s: %w", got, d, storeclient.ErrCorrupt)
	}
	return nil
}

// finish stores the remaining Directories and then, last, the PathInfo, so
// an interrupted import never leaves a PathInfo whose content is missing.
func finish(ctx context.Context, store storeclient.Store, b *treeBuilder, name string, narSize uint64, narSHA256 [sha256.Size]byte) (*storeclient.PathInfo, error) {
	if !b.hasRoot || len(b.stack) != 0 {
		return nil, errors.New("import ended before the root node was complete")
	}
	if err := b.root.resolve(ctx); err != nil {
		return nil, err
	}
	if err := b.up.flush(ctx); err != nil {
		return nil, err
	}
	sp, err := storeclient.FixedOutputSourcePath(narSHA256, name)
	if err != nil {
		return nil, fmt.Errorf("store path name %s: %w", strconv.Quote(name), err)
	}
	p := &storeclient.PathInfo{
		StorePath: sp,
		Node:      b.root.node,
		NarSize:   narSize,
		NarSHA256: narSHA256,
		CA:        &storeclient.ContentAddress{Type: storepb.NARInfo_CA_NAR_SHA256, Digest: slices.Clone(narSHA256[:])},
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.PutPathInfo(ctx, p); err != nil {
		return nil, fmt.Errorf("put pathinfo %s: %w", sp, err)
	}
	return p, nil
}

// bufPool hands out content buffers by power-of-two size class, so small
// files of every size reuse memory instead of allocating per file.
type bufPool struct {
	classes [maxClass + 1]sync.Pool
}

const (
	minClassShift = 12 // 4 KiB
	maxClass      = 20 - minClassShift
)

func classOf(n int) int {
	c := 0
	for (1 << (minClassShift + c)) < n {
		c++
	}
	return c
}

// get returns a buffer of length n (n at most 1 MiB).
func (p *bufPool) get(n int) []byte {
	c := classOf(n)
	if c > maxClass {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(minClassShift+c))
}

func (p *bufPool) put(b []byte) {
	c := classOf(cap(b))
	if c > maxClass || cap(b) != 1<<(minClassShift+c) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}

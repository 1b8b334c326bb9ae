// Package importer adds local files and NARs to a castore exactly as
// `nix-store --add` adds them to a Nix store: the store path is the
// fixed-output, recursive, sha256 ("source") path of the NAR serialisation
// (castore.md, "Store paths").
//
// ImportPath reads every file once. A walker lists the tree in NAR order
// (entries sorted by the raw bytes of their names); a pool of workers
// reads small files whole, in batches of consecutive files, hashes them
// with BLAKE3 and stores the blobs that the store does not have yet (in
// one call when the store implements SmallBlobPutter); one sequencer
// consumes the walk in order and feeds the NAR framing and every file's
// contents into a single sha256, so the NAR hash needs no second read.
// The memory read ahead is bounded by a byte budget. Big files are
// streamed by the sequencer through a pipeline: one goroutine reads, a
// second stores each chunk (BLAKE3 and write), a third feeds it to the
// sha256. Directories are stored leaves first, in batches when the store
// implements DirectoryBatchPutter, and the PathInfo is stored last, so an
// import that is killed leaves no PathInfo pointing at missing content.
package importer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// Options says how ImportPath imports.
type Options struct {
	// Name is the store path's name. "" means the name nix-store --add
	// takes: the last component of the path as given (see NixBaseName).
	Name string
	// Parallelism is how many files are read, hashed and stored at once.
	// Zero or less means runtime.GOMAXPROCS(0).
	Parallelism int
	// Logger receives one line per finished import; nil means
	// slog.Default().
	Logger *slog.Logger
}

const (
	// smallFileMax is the largest file a worker reads whole; bigger files
	// are streamed by the sequencer.
	smallFileMax = 1 << 20
	// readAheadBytes bounds the contents of small files held in memory
	// between their worker and the sequencer.
	readAheadBytes = 64 << 20
	// eventQueue bounds how far the walker lists ahead of the sequencer.
	eventQueue = 4096
)

// NixBaseName returns the name nix-store --add gives path: what follows
// its last "/", after removing one trailing "/" (so "dir/" is "dir", and
// "dir//" is the invalid empty name, as in Nix).
func NixBaseName(path string) string {
	if len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		path = path[i+1:]
	}
	return path
}

func (o Options) parallelism() int {
	if o.Parallelism > 0 {
		return o.Parallelism
	}
	return runtime.GOMAXPROCS(0)
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// ImportPath imports the file, directory or symlink at path into store and
// returns its PathInfo, whose store path is the one `nix-store --add path`
// prints. A symlink given as path is imported as a symlink, not followed,
// as Nix does. Only regular files, directories and symlinks can be
// imported; anything else is an error naming it. Re-importing is cheap:
// blobs the store already has are not written again.
func ImportPath(ctx context.Context, store storeclient.Store, path string, opts Options) (*storeclient.PathInfo, error) {
	start := time.Now()
	name := opts.Name
	if name == "" {
		name = NixBaseName(path)
	}
	if _, err := storeclient.NewStorePath(storeclient.StorePathDigest{}, name); err != nil {
		return nil, fmt.Errorf("import %s: %w", quote(path), err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", quote(path), err)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	par := opts.parallelism()
	im := &pathImport{
		store:  store,
		budget: semaphore.NewWeighted(readAheadBytes),
		events: make(chan event, eventQueue),
		jobs:   newBatcher(par),
	}
	var wg sync.WaitGroup
	var walkErr error
	wg.Go(func() {
		defer close(im.events)
		defer im.jobs.close()
		err := im.walk(ctx, abs, "", fi)
		if err == nil {
			err = im.jobs.flush(ctx)
		}
		if err != nil {
			walkErr = err
			cancel(err)
		}
	})
	for range par {
		wg.Go(func() {
			runBatches(ctx, im.jobs.out, func(j *fileJob) error { return im.readSmall(ctx, j) })
		})
	}
	info, err := im.sequence(ctx, name)
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	if walkErr != nil && !errors.Is(walkErr, context.Canceled) {
		err = walkErr
	}
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", quote(path), err)
	}
	opts.logger().Debug("imported", "path", abs, "store_path", info.StorePath.String(),
		"nar_size", info.NarSize, "files", im.files, "duration", time.Since(start).Round(time.Millisecond))
	return info, nil
}

// pathImport is the state of one ImportPath.
type pathImport struct {
	store  storeclient.Store
	budget *semaphore.Weighted
	events chan event
	jobs   *batcher // owned by the walker
	pool   bufPool
	empty  emptyBlob
	files  int // counted by the sequencer
}

type eventKind uint8

const (
	evDirectory eventKind = iota + 1
	evEnd
	evFile
	evSymlink
)

// event is one node of the walk, in NAR order.
type event struct {
	kind       eventKind
	name       string // entry name; "" for the root
	path       string // evFile: the file on disk
	size       uint64
	executable bool
	target     storeclient.SymlinkTarget
	job        *fileJob // evFile: the worker's job for a small file, else nil
}

// send hands ev to the sequencer. Before it waits for room, it sends the
// pending batch of jobs, which the sequencer may be waiting for.
func (im *pathImport) send(ctx context.Context, ev event) error {
	select {
	case im.events <- ev:
		return nil
	default:
	}
	if err := im.jobs.flush(ctx); err != nil {
		return err
	}
	select {
	case im.events <- ev:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// walk lists the tree at path in NAR order, handing small files to the
// workers as it goes.
func (im *pathImport) walk(ctx context.Context, path, name string, fi fs.FileInfo) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		ev := event{kind: evFile, name: name, path: path, size: uint64(fi.Size()), executable: mode&0o100 != 0}
		if ev.size > 0 && ev.size <= smallFileMax {
			if err := acquire(ctx, im.budget, ev.size, im.jobs); err != nil {
				return err
			}
			ev.job = &fileJob{path: path, size: ev.size, executable: ev.executable}
			if err := im.jobs.add(ctx, ev.job); err != nil {
				return err
			}
		}
		return im.send(ctx, ev)
	case mode&fs.ModeSymlink != 0:
		t, err := os.Readlink(path)
		if err != nil {
			return err
		}
		target, err := storeclient.NewSymlinkTarget(t)
		if err != nil {
			return fmt.Errorf("symlink %s: %w", quote(path), err)
		}
		return im.send(ctx, event{kind: evSymlink, name: name, target: target})
	case mode.IsDir():
		entries, err := os.ReadDir(path) // sorted by the bytes of the names
		if err != nil {
			return err
		}
		if err := im.send(ctx, event{kind: evDirectory, name: name}); err != nil {
			return err
		}
		for _, e := range entries {
			child := path + "/" + e.Name()
			if strings.HasSuffix(path, "/") {
				child = path + e.Name()
			}
			info, err := e.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", quote(child), err)
			}
			if err := im.walk(ctx, child, e.Name(), info); err != nil {
				return err
			}
		}
		return im.send(ctx, event{kind: evEnd, name: name})
	}
	return fmt.Errorf("%s is a %s: only regular files, directories and symlinks can be imported",
		quote(path), fileType(mode))
}

func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "file of unsupported type " + m.Type().String()
}

// openRegular opens a file the walk listed as regular, refusing to follow
// a symlink that replaced it.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular(path)
	}
	return f, nil
}

// readSmall reads a small file whole, hashes it and stores its blob.
func (im *pathImport) readSmall(ctx context.Context, j *fileJob) error {
	j.data = im.pool.get(int(j.size))
	if err := readSmallFile(j.path, j.data); err != nil {
		return err
	}
	j.digest = storeclient.HashBytes(j.data)
	if err := putBlob(ctx, im.store, j.data, j.digest); err != nil {
		return fmt.Errorf("%s: %w", quote(j.path), err)
	}
	return nil
}

// checkEOF fails if f has more than the size bytes already read.
func checkEOF(f *os.File, path string, size uint64) error {
	var one [1]byte
	n, err := f.Read(one[:])
	if n > 0 {
		return errGrown(path, size)
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("read %s: %w", quote(path), err)
	}
	return nil
}

func errNotRegular(path string) error {
	return fmt.Errorf("%s is no longer a regular file (changed while importing)", quote(path))
}

func errShrunk(path string, size uint64) error {
	return fmt.Errorf("%s has fewer than the %d bytes it had when listed (changed while importing)", quote(path), size)
}

func errGrown(path string, size uint64) error {
	return fmt.Errorf("%s has more than the %d bytes it had when listed (changed while importing)", quote(path), size)
}

// sequence consumes the walk in NAR order: it writes the NAR into one
// sha256, collects the finished nodes into Directories, stores those
// leaves first, and stores the PathInfo last.
func (im *pathImport) sequence(ctx context.Context, name string) (*storeclient.PathInfo, error) {
	h := sha256.New()
	enc := nar.NewEncoder(h)
	b := &treeBuilder{up: newDirUploader(im.store)}
	for {
		var ev event
		var ok bool
		select {
		case ev, ok = <-im.events:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		if !ok {
			break
		}
		if ev.kind != evEnd && b.depth() > 0 {
			if err := enc.Entry(ev.name); err != nil {
				return nil, err
			}
		}
		var err error
		switch ev.kind {
		case evDirectory:
			err = enc.Directory()
			b.beginDir(ev.name)
		case evEnd:
			if err = enc.End(); err == nil {
				err = b.endDir(ctx)
			}
		case evSymlink:
			if err = enc.Symlink(string(ev.target)); err == nil {
				err = b.add(ev.name, storeclient.SymlinkNode(ev.target))
			}
		case evFile:
			var n storeclient.Node
			if n, err = im.file(ctx, enc, ev); err == nil {
				err = b.add(ev.name, n)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return finish(ctx, im.store, b, name, enc.Size(), sum)
}

// file adds one regular file to the NAR hash and returns its node.
func (im *pathImport) file(ctx context.Context, enc *nar.Encoder, ev event) (storeclient.Node, error) {
	im.files++
	if err := enc.File(ev.size, ev.executable); err != nil {
		return storeclient.Node{}, err
	}
	switch {
	case ev.size == 0:
		if err := im.empty.ensure(ctx, im.store); err != nil {
			return storeclient.Node{}, err
		}
		return storeclient.FileNode(storeclient.EmptyDigest, 0, ev.executable), nil
	case ev.job != nil:
		j := ev.job
		if err := j.wait(ctx); err != nil {
			return storeclient.Node{}, err
		}
		_, err := enc.Write(j.data)
		im.pool.put(j.data)
		j.data = nil
		im.budget.Release(int64(j.size))
		if err != nil {
			return storeclient.Node{}, err
		}
		return j.node(), nil
	}
	f, err := openRegular(ev.path)
	if err != nil {
		return storeclient.Node{}, err
	}
	defer f.Close()
	d, err := streamBlob(ctx, im.store, f, ev.size, enc, quote(ev.path))
	if err != nil {
		return storeclient.Node{}, err
	}
	if err := checkEOF(f, ev.path, ev.size); err != nil {
		return storeclient.Node{}, err
	}
	return storeclient.FileNode(d, ev.size, ev.executable), nil
}

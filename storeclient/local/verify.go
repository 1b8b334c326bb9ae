package local

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
)

// verifyWorkers is how many blob files Verify hashes at once.
const verifyWorkers = 2

// verifyBufferSize is the read buffer of each Verify worker: memory stays
// bounded whatever the blob sizes.
const verifyBufferSize = 1 << 20

// ProblemKind says what is wrong with an object.
type ProblemKind string

// The kinds of Problem.
const (
	// ProblemCorrupt: the object is stored but its bytes do not match its
	// digest, or cannot be decoded, or its length disagrees with what
	// refers to it.
	ProblemCorrupt ProblemKind = "corrupt"
	// ProblemMissing: an object that another one refers to is not stored.
	ProblemMissing ProblemKind = "missing"
	// ProblemStray: a file in the blob directories that is not a blob.
	ProblemStray ProblemKind = "stray"
	// ProblemQuarantined: a blob found corrupt and quarantined (by the
	// scrubber or at its first open) and not put again since: it is not
	// served until it is (see the package documentation).
	ProblemQuarantined ProblemKind = "quarantined"
)

// Problem is one corrupt, missing or stray object found by Verify.
type Problem struct {
	Kind ProblemKind
	// Object is "blob", "directory", "pathinfo" or "file".
	Object string
	// ID names the object: a digest in display form, a store path, or a
	// file path for a stray file.
	ID string
	// Detail says what was found, and for a missing object who refers to
	// it.
	Detail string
}

// String formats p as one line, e.g.
// "corrupt blob blake3-…: content hashes to blake3-…".
func (p Problem) String() string {
	return fmt.Sprintf("%s %s %s: %s", p.Kind, p.Object, p.ID, p.Detail)
}

// VerifyStats counts what Verify checked.
type VerifyStats struct {
	Blobs       int64
	BlobBytes   int64
	Directories int64
	PathInfos   int64
	Problems    int64
	Duration    time.Duration
	// OutboardsWritten counts the kept bao outboards (see Outboards in
	// the package documentation) that were missing and were written;
	// OutboardsRepaired those that did not match their blob and were
	// written again; OutboardsRemoved those of blobs the store no longer
	// has, removed. None of them is a problem: an outboard is derived from
	// its blob and written again whenever it is found wrong.
	OutboardsWritten, OutboardsRepaired, OutboardsRemoved int64
}

// Verify re-hashes every blob file and every packed blob (streaming,
// verifyWorkers blobs at a time) and every Directory, checks that every child of every Directory and
// the root of every PathInfo is stored with the recorded size, and calls
// report for each problem found, from one goroutine at a time. A damaged
// meta.db is reported (Object "database") and what does not need it is
// still checked; a quarantined blob that was not put again since is
// reported as ProblemQuarantined. It returns what it checked; an error
// means verification could not finish (I/O error, cancelled context), not
// that problems were found.
//
// Verify finds corrupt blobs but does not quarantine them. The only thing
// it writes is outboards, derived data: the kept outboard of a blob found
// good is checked, and written from the blob if it is missing or wrong
// (counted, and logged when wrong, not reported as a problem); outboards
// of blobs the store does not have are removed. So it may run on a store
// opened read-only next to other readers (a mount, say).
func (s *Store) Verify(ctx context.Context, report func(Problem)) (VerifyStats, error) {
	start := time.Now()
	var st VerifyStats
	var mu sync.Mutex // serialises report and st.Problems
	problem := func(p Problem) {
		mu.Lock()
		defer mu.Unlock()
		st.Problems++
		report(p)
	}
	if err := s.usable(ctx, false); err != nil {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	// A damaged meta.db is a problem like a corrupt blob: it is reported,
	// and what does not need the damaged part is still checked.
	dmg := &damageReports{problem: problem}
	packed, err := s.packedEntries(ctx, problem)
	if err != nil && !dmg.part(err) {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	if err := s.verifyBlobs(ctx, &st, packed, problem); err != nil {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	removed, err := s.sweepOutboards(ctx, nil, func(path, detail string) {
		problem(Problem{Kind: ProblemStray, Object: "file", ID: path, Detail: detail})
	})
	st.OutboardsRemoved = removed
	if err != nil {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	sizes := make(map[storeclient.Digest]int64, len(packed))
	for _, e := range packed {
		sizes[e.d] = e.loc.size
	}
	if err := s.verifyDirectories(ctx, &st, sizes, problem, dmg); err != nil && !dmg.part(err) {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	if err := s.verifyPathInfos(ctx, &st, sizes, problem, dmg); err != nil && !dmg.part(err) {
		return st, fmt.Errorf("verify store %s: %w", s.dir, err)
	}
	dmg.finish()
	s.verifyQuarantine(ctx, problem)
	st.Duration = time.Since(start)
	return st, nil
}

// verifyQuarantine reports every quarantined blob that has no good copy
// again.
func (s *Store) verifyQuarantine(ctx context.Context, problem func(Problem)) {
	if err := s.quar.load(); err != nil {
		problem(Problem{Kind: ProblemCorrupt, Object: "file", ID: s.quar.dir, Detail: err.Error()})
	}
	for _, d := range s.quar.digests() {
		_, err := s.findBlob(ctx, d, false)
		var qe *quarantinedError
		if errors.As(err, &qe) {
			problem(Problem{Kind: ProblemQuarantined, Object: "blob", ID: d.String(),
				Detail: fmt.Sprintf("its bytes (%s) did not hash to its digest; put it again (import the store path again, storefs copy) to repair the store", qe.where)})
		}
	}
}

// damageReports turns the errors of a damaged meta.db met by Verify into
// problems: one for each part of the database it could not read through,
// and one for all the lookups that failed on the damage (there may be one
// per Directory entry).
type damageReports struct {
	problem func(Problem)
	mu      sync.Mutex
	lookups int
	first   error
}

// part reports the damage err, which stopped a scan of one part of the
// database, and returns true, or returns false if err is not about damage.
func (r *damageReports) part(err error) bool {
	if !errors.Is(err, ErrDamaged) {
		return false
	}
	r.problem(Problem{Kind: ProblemCorrupt, Object: "database", ID: dbFile, Detail: err.Error()})
	return true
}

// lookup counts a lookup that failed with err, and returns true, or
// returns false if err is not about damage.
func (r *damageReports) lookup(err error) bool {
	if !errors.Is(err, ErrDamaged) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lookups == 0 {
		r.first = err
	}
	r.lookups++
	return true
}

// finish reports the failed lookups.
func (r *damageReports) finish() {
	if r.lookups > 0 {
		r.problem(Problem{Kind: ProblemCorrupt, Object: "database", ID: dbFile,
			Detail: fmt.Sprintf("%d lookups failed, so what they looked up was not checked; the first: %v", r.lookups, r.first)})
	}
}

// packedEntries reads the whole pack index, sorted by pack and offset, so
// that hashing the packed blobs reads each pack from start to end. An
// entry that cannot be decoded is reported and left out. After an error
// the entries read before it are returned with it. Packed blobs this
// writer has not committed yet are not stored for other processes, and
// are not checked.
func (s *Store) packedEntries(ctx context.Context, problem func(Problem)) (es []packedEntry, err error) {
	for k, v := range s.scan(ctx, bucketPacked) {
		if k == nil {
			if errors.Is(v.err, errNoBucket) {
				break // a store of layout 2 without packs
			}
			err = fmt.Errorf("scan pack index: %w", v.err)
			break // the entries read so far are still checked
		}
		d, err := storeclient.DigestFromBytes(k)
		if err != nil {
			problem(Problem{Kind: ProblemCorrupt, Object: "blob", ID: fmt.Sprintf("pack index key %x", k), Detail: err.Error()})
			continue
		}
		loc, err := decodeLoc(v.value)
		if err != nil {
			problem(Problem{Kind: ProblemCorrupt, Object: "blob", ID: d.String(), Detail: "pack index entry: " + err.Error()})
			continue
		}
		es = append(es, packedEntry{d, loc})
	}
	slices.SortFunc(es, func(a, b packedEntry) int {
		if c := cmp.Compare(a.loc.pack, b.loc.pack); c != 0 {
			return c
		}
		return cmp.Compare(a.loc.off, b.loc.off)
	})
	return es, err
}

// verifyBlobs walks DIR/blobs and hashes every file, then hashes every
// packed blob and reports stray files in DIR/packs.
func (s *Store) verifyBlobs(ctx context.Context, st *VerifyStats, packed []packedEntry, problem func(Problem)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct {
		path string // a blob file; empty for a packed blob
		d    storeclient.Digest
		loc  packLoc
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	for range verifyWorkers {
		wg.Go(func() {
			buf := make([]byte, verifyBufferSize)
			for j := range jobs {
				var n int64
				var good bool
				var err error
				if j.path != "" {
					n, good, err = s.verifyBlob(j.path, j.d, buf, problem)
				} else {
					n, good, err = s.verifyPacked(j.d, j.loc, buf, problem)
				}
				if err != nil {
					fail(err)
					continue
				}
				fix := outboardGood
				if good {
					fix, _ = s.fixOutboard(ctx, j.d, n, nil) // no pace, no error
				}
				mu.Lock()
				st.Blobs++
				st.BlobBytes += n
				switch fix {
				case outboardWritten:
					st.OutboardsWritten++
				case outboardRepaired:
					st.OutboardsRepaired++
				}
				mu.Unlock()
			}
		})
	}
	root := filepath.Join(s.dir, blobsDir)
	walkErr := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		depth := strings.Count(rel, string(filepath.Separator)) + 1
		if e.IsDir() {
			if depth > 1 || !isHexShard(e.Name()) {
				problem(Problem{Kind: ProblemStray, Object: "file", ID: path, Detail: "directory that is not a blob shard"})
				return filepath.SkipDir
			}
			return nil
		}
		d, ok := blobName(rel)
		if !ok || !e.Type().IsRegular() {
			problem(Problem{Kind: ProblemStray, Object: "file", ID: path, Detail: "not a blob (blobs are regular files named blobs/ab/abcd…)"})
			return nil
		}
		select {
		case jobs <- job{path: path, d: d}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if walkErr == nil {
		walkErr = s.straysInPacks(problem)
	}
	if walkErr == nil {
	feed:
		for _, e := range packed {
			select {
			case jobs <- job{d: e.d, loc: e.loc}:
			case <-ctx.Done():
				walkErr = ctx.Err()
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if walkErr != nil {
		return fmt.Errorf("walk blobs: %w", walkErr)
	}
	return nil
}

// verifyBlob hashes one blob file and reports it if its content does not
// match its name. It returns the number of bytes read and whether they
// hash to d; an error means the file could not be read at all for a
// reason other than corruption.
func (s *Store) verifyBlob(path string, d storeclient.Digest, buf []byte, problem func(Problem)) (int64, bool, error) {
	c, err := checkBlobFile(path, d, buf, nil)
	if errors.Is(err, errCopyGone) {
		return 0, false, nil // removed since the walk saw it
	}
	if err != nil {
		return 0, false, fmt.Errorf("verify blob %s: %w", d, err)
	}
	if c.fault != "" {
		problem(Problem{Kind: ProblemCorrupt, Object: "blob", ID: d.String(), Detail: c.fault})
	}
	return c.n, c.fault == "", nil
}

// verifyPacked hashes one packed blob and reports it if its content does
// not match its digest or the pack ends before it. It returns what
// verifyBlob does.
func (s *Store) verifyPacked(d storeclient.Digest, loc packLoc, buf []byte, problem func(Problem)) (int64, bool, error) {
	c, err := s.checkPacked(d, loc, buf, nil)
	if err != nil {
		return 0, false, fmt.Errorf("verify blob %s: %w", d, err)
	}
	if c.fault != "" {
		problem(Problem{Kind: ProblemCorrupt, Object: "blob", ID: d.String(), Detail: c.fault})
	}
	return c.n, c.fault == "", nil
}

// straysInPacks reports what in DIR/packs is not a pack file.
func (s *Store) straysInPacks(problem func(Problem)) error {
	dir := filepath.Join(s.dir, packsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // layout 2
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if _, ok := parsePackName(e.Name()); !ok || !e.Type().IsRegular() {
			problem(Problem{Kind: ProblemStray, Object: "file", ID: filepath.Join(dir, e.Name()), Detail: "not a pack (packs are regular files named packs/<8 hexadecimal digits>.pack)"})
		}
	}
	return nil
}

// isHexShard reports whether name is a shard directory name: two lower-case
// hexadecimal characters.
func isHexShard(name string) bool {
	if len(name) != 2 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil && name == lowerHex(name)
}

func lowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// blobName parses "ab/abcd…" (relative to DIR/blobs) into a digest.
func blobName(rel string) (storeclient.Digest, bool) {
	dir, name := filepath.Split(rel)
	if len(name) != 2*storeclient.DigestSize || name != lowerHex(name) {
		return storeclient.Digest{}, false
	}
	d, err := storeclient.ParseDigest(name)
	if err != nil {
		return storeclient.Digest{}, false
	}
	if dir != name[0:2]+string(filepath.Separator) {
		return storeclient.Digest{}, false
	}
	return d, true
}

// verifyDirectories re-hashes and decodes every Directory and checks its
// children.
func (s *Store) verifyDirectories(ctx context.Context, st *VerifyStats, packed map[storeclient.Digest]int64, problem func(Problem), dmg *damageReports) error {
	for k, v := range s.scan(ctx, bucketDirectories) {
		if k == nil {
			return fmt.Errorf("scan directories: %w", v.err)
		}
		st.Directories++
		d, err := storeclient.DigestFromBytes(k)
		if err != nil {
			problem(Problem{Kind: ProblemCorrupt, Object: "directory", ID: fmt.Sprintf("key %x", k), Detail: err.Error()})
			continue
		}
		dir, err := decodeDirectory(d, v.value)
		if err != nil {
			problem(Problem{Kind: ProblemCorrupt, Object: "directory", ID: d.String(), Detail: err.Error()})
			continue
		}
		for _, e := range dir.Entries() {
			referrer := fmt.Sprintf("entry %q of directory %s", string(e.Name), d)
			if err := s.checkNode(ctx, e.Node, referrer, packed, problem, dmg); err != nil {
				return err
			}
		}
	}
	return nil
}

// verifyPathInfos decodes every PathInfo and checks its root.
func (s *Store) verifyPathInfos(ctx context.Context, st *VerifyStats, packed map[storeclient.Digest]int64, problem func(Problem), dmg *damageReports) error {
	for k, v := range s.scan(ctx, bucketPathInfos) {
		if k == nil {
			return fmt.Errorf("scan pathinfos: %w", v.err)
		}
		st.PathInfos++
		p, err := decodePathInfo(k, v.value)
		if err != nil {
			problem(Problem{Kind: ProblemCorrupt, Object: "pathinfo", ID: fmt.Sprintf("key %x", k), Detail: err.Error()})
			continue
		}
		if err := s.checkNode(ctx, p.Node, "root of "+p.StorePath.Absolute(), packed, problem, dmg); err != nil {
			return err
		}
	}
	return nil
}

// checkNode reports a directory or file node whose content is missing or
// has another size than recorded. Corrupt content is reported where it is
// hashed, not again here. packed holds the sizes of the packed blobs (a
// blob file of its own is looked at first, as readers do). An error means
// the database could not be read; a lookup that fails on a damaged
// database is counted in dmg instead.
func (s *Store) checkNode(ctx context.Context, n storeclient.Node, referrer string, packed map[storeclient.Digest]int64, problem func(Problem), dmg *damageReports) error {
	switch n.Kind() {
	case storeclient.KindFile:
		var err error
		fi, serr := os.Stat(s.blobPath(n.Digest()))
		size, ok := packed[n.Digest()]
		switch {
		case serr == nil:
			size, ok = fi.Size(), true
		case !errors.Is(serr, os.ErrNotExist):
			err = serr
		case !ok:
			// Packed after the index was read (an import running
			// next to verify)?
			var loc packLoc
			if loc, ok, err = s.indexLoc(ctx, n.Digest()); ok {
				size = loc.size
			}
		}
		switch {
		case err != nil:
		case !ok:
			err = storeclient.ErrNotFound
		case uint64(size) != n.Size():
			err = fmt.Errorf("blob %s has %d bytes, recorded size is %d: %w", n.Digest(), size, n.Size(), storeclient.ErrCorrupt)
		}
		switch {
		case dmg.lookup(err):
		case errors.Is(err, storeclient.ErrNotFound) && s.quar.lookup(n.Digest()) != nil:
			// Reported as quarantined.
		case errors.Is(err, storeclient.ErrNotFound):
			problem(Problem{Kind: ProblemMissing, Object: "blob", ID: n.Digest().String(), Detail: "referred to by " + referrer})
		case err != nil:
			problem(Problem{Kind: ProblemCorrupt, Object: "blob", ID: n.Digest().String(), Detail: fmt.Sprintf("%v (referred to by %s)", err, referrer)})
		}
	case storeclient.KindDirectory:
		var size uint64
		var found, decoded bool
		d := n.Digest()
		err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
			b, err := requiredBucket(tx, bucketDirectories)
			if err != nil {
				return err
			}
			raw, ok := get(b, d[:])
			if !ok {
				return nil
			}
			found = true
			dir, err := storeclient.UnmarshalDirectory(raw)
			if err != nil {
				return nil // reported as corrupt where it is scanned
			}
			decoded, size = true, dir.Size()
			return nil
		})
		if dmg.lookup(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read directory %s: %w", n.Digest(), err)
		}
		switch {
		case !found:
			problem(Problem{Kind: ProblemMissing, Object: "directory", ID: n.Digest().String(), Detail: "referred to by " + referrer})
		case decoded && size != n.Size():
			problem(Problem{Kind: ProblemCorrupt, Object: "directory", ID: n.Digest().String(), Detail: fmt.Sprintf("size %d, %s records %d", size, referrer, n.Size())})
		}
	}
	return nil
}

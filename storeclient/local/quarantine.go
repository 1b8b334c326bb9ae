package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// The quarantine of blobs whose bytes no longer hash to their digest: see
// Quarantine in the package documentation.

const (
	quarantineDir = "quarantine"
	// packedMarkerExt ends the name of a packed blob's quarantine marker.
	packedMarkerExt = ".packed"
	// quarantineReloadEvery is how often, at most, the writer looks for
	// quarantines made by other processes when it is about to keep a blob
	// it has already (see reloadQuarantine).
	quarantineReloadEvery = time.Second
)

// ErrQuarantined is wrapped by the error for a blob that is quarantined:
// its stored copy did not hash to its digest, and it is not served until
// it is put again. errors.Is(err, storeclient.ErrCorrupt) is true for these
// errors too, errors.Is(err, storeclient.ErrNotFound) is not: the store
// had the blob, and a frontend answers EIO, not ENOENT.
var ErrQuarantined = errors.New("blob is quarantined")

// quarantinedError reports a quarantined blob.
type quarantinedError struct {
	d     storeclient.Digest
	where string // the quarantined copy
}

func (e *quarantinedError) Error() string {
	return fmt.Sprintf("blob %s is quarantined: its stored bytes (%s) did not hash to its digest; put the blob again (import the store path again, storefs copy) to repair the store", e.d, e.where)
}

// Is makes the error match ErrQuarantined and storeclient.ErrCorrupt.
func (e *quarantinedError) Is(target error) bool {
	return target == ErrQuarantined || target == storeclient.ErrCorrupt
}

// fileID identifies a blob file, whatever its name.
type fileID struct{ dev, ino uint64 }

// idOf returns the identity of the file fi describes.
func idOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
}

// badFile is a quarantined blob file.
type badFile struct {
	id fileID
	// moved says the file is in DIR/quarantine; else the quarantine is
	// in memory only.
	moved bool
	path  string // where the file is
	epoch uint64 // see quarantine.epoch
}

// badPacked is a quarantined packed blob.
type badPacked struct {
	loc packLoc
	// marked says DIR/quarantine/<hex>.packed records it; else the
	// quarantine is in memory only.
	marked bool
	epoch  uint64 // see quarantine.epoch
}

// quarantine is the set of quarantined blobs of a Store.
type quarantine struct {
	dir string // DIR/quarantine
	// count is len(files)+len(packed), read without the lock so that
	// readers of a store with nothing quarantined pay one atomic load.
	count  atomic.Int64
	mu     sync.RWMutex
	files  map[storeclient.Digest]badFile
	packed map[storeclient.Digest]badPacked
	// lastReload is when DIR/quarantine was last read (UnixNano).
	lastReload atomic.Int64
	// epoch counts the reads of DIR/quarantine. An entry records the
	// epoch it was added or last read in; a read drops only the persisted
	// entries it does not list that are older than itself, so that it
	// never drops one added while it was listing the directory.
	epoch atomic.Uint64
	// memoryOnlyLogged is set once a quarantine that could not be
	// persisted was logged.
	memoryOnlyLogged atomic.Bool
}

func newQuarantine(storeDir string) *quarantine {
	return &quarantine{
		dir:    filepath.Join(storeDir, quarantineDir),
		files:  make(map[storeclient.Digest]badFile),
		packed: make(map[storeclient.Digest]badPacked),
	}
}

// empty reports whether nothing is quarantined (the common case, checked
// without a lock).
func (q *quarantine) empty() bool { return q.count.Load() == 0 }

func (q *quarantine) recount() { q.count.Store(int64(len(q.files) + len(q.packed))) }

// fileBad reports whether id is a quarantined copy of blob d.
func (q *quarantine) fileBad(d storeclient.Digest, id fileID) bool {
	if q.empty() {
		return false
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	bf, ok := q.files[d]
	return ok && bf.id == id && id != (fileID{})
}

// packedBad reports whether the packed copy of blob d at loc is
// quarantined.
func (q *quarantine) packedBad(d storeclient.Digest, loc packLoc) bool {
	if q.empty() {
		return false
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	bp, ok := q.packed[d]
	return ok && bp.loc == loc
}

// lookup returns the error for a quarantined blob d, or nil if d has no
// quarantined copy.
func (q *quarantine) lookup(d storeclient.Digest) error {
	if q.empty() {
		return nil
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if bf, ok := q.files[d]; ok {
		return &quarantinedError{d: d, where: bf.path}
	}
	if bp, ok := q.packed[d]; ok {
		return &quarantinedError{d: d, where: fmt.Sprintf("%s at %d", filepath.Join(packsDir, packName(bp.loc.pack)), bp.loc.off)}
	}
	return nil
}

// digests returns the quarantined digests, sorted.
func (q *quarantine) digests() []storeclient.Digest {
	q.mu.RLock()
	defer q.mu.RUnlock()
	ds := make([]storeclient.Digest, 0, len(q.files)+len(q.packed))
	for d := range q.files {
		ds = append(ds, d)
	}
	for d := range q.packed {
		if _, ok := q.files[d]; !ok {
			ds = append(ds, d)
		}
	}
	slices.SortFunc(ds, func(a, b storeclient.Digest) int { return strings.Compare(string(a[:]), string(b[:])) })
	return ds
}

// load reads DIR/quarantine and adds what it records to the set; entries
// this process keeps in memory only stay. A missing directory is an empty
// quarantine. Markers that cannot be parsed are skipped (Verify does not
// read them either).
func (q *quarantine) load() error {
	q.lastReload.Store(time.Now().UnixNano())
	epoch := q.epoch.Add(1)
	entries, err := os.ReadDir(q.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", q.dir, err)
	}
	files := make(map[storeclient.Digest]badFile)
	packed := make(map[storeclient.Digest]badPacked)
	for _, e := range entries {
		name := e.Name()
		if hex, ok := strings.CutSuffix(name, packedMarkerExt); ok {
			d, err := storeclient.ParseDigest(hex)
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join(q.dir, name))
			if err != nil {
				continue
			}
			loc, err := parseMarker(string(b))
			if err != nil {
				continue
			}
			packed[d] = badPacked{loc: loc, marked: true, epoch: epoch}
			continue
		}
		d, err := storeclient.ParseDigest(name)
		if err != nil || len(name) != 2*storeclient.DigestSize || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		files[d] = badFile{id: idOf(fi), moved: true, path: filepath.Join(q.dir, name), epoch: epoch}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// What is on disk replaces what was on disk before (another process
	// may have repaired a blob, or quarantined one); what is in memory
	// only stays, and so does what this process added since the listing
	// began.
	for d, bf := range q.files {
		if _, listed := files[d]; !listed && bf.moved && bf.epoch < epoch {
			delete(q.files, d)
		}
	}
	for d, bp := range q.packed {
		if _, listed := packed[d]; !listed && bp.marked && bp.epoch < epoch {
			delete(q.packed, d)
		}
	}
	for d, bf := range files {
		if cur, ok := q.files[d]; !ok || cur.epoch < epoch {
			q.files[d] = bf
		}
	}
	for d, bp := range packed {
		if cur, ok := q.packed[d]; !ok || cur.epoch < epoch {
			q.packed[d] = bp
		}
	}
	q.recount()
	return nil
}

// marker is the content of a packed blob's quarantine marker.
func marker(loc packLoc) string {
	return fmt.Sprintf("pack %s offset %d size %d\n", packName(loc.pack), loc.off, loc.size)
}

func parseMarker(s string) (packLoc, error) {
	var name string
	var loc packLoc
	if _, err := fmt.Sscanf(s, "pack %s offset %d size %d\n", &name, &loc.off, &loc.size); err != nil {
		return packLoc{}, fmt.Errorf("quarantine marker %q: %w", s, err)
	}
	id, ok := parsePackName(name)
	if !ok {
		return packLoc{}, fmt.Errorf("quarantine marker %q: bad pack name", s)
	}
	loc.pack = id
	return loc, nil
}

// reloadQuarantine reads DIR/quarantine again if it was last read more
// than quarantineReloadEvery ago, to see the quarantines of other
// processes (the scrubber of a daemon, say). An error is logged: the
// quarantine is then as this process last saw it.
func (s *Store) reloadQuarantine() {
	q := s.quar
	if time.Since(time.Unix(0, q.lastReload.Load())) < quarantineReloadEvery {
		return
	}
	if err := q.load(); err != nil {
		s.log.Warn("cannot read the quarantine", "store", s.dir, "err", err)
	}
}

// quarantineFile quarantines the blob file f, open on blobs/ab/<hex>,
// whose bytes are not blob d's (fault says how). It moves the file to
// DIR/quarantine, or, if that cannot be done, remembers the file in
// memory. If another process replaced the file meanwhile (a writer
// putting a good copy), it leaves the new file in place and quarantines
// nothing.
func (s *Store) quarantineFile(d storeclient.Digest, f *os.File, fault string) {
	fi, err := f.Stat()
	if err != nil {
		s.log.Error("corrupt blob not quarantined: cannot stat it", "store", s.dir, "digest", d.String(), "file", f.Name(), "fault", fault, "err", err)
		return
	}
	id := idOf(fi)
	path := s.blobPath(d)
	dest := filepath.Join(s.quar.dir, d.Hex())
	moved, err := s.moveToQuarantine(path, dest, fi)
	if errors.Is(err, errCopyGone) {
		return // replaced or quarantined by another process
	}
	bf := badFile{id: id, moved: moved, path: path}
	if moved {
		bf.path = dest
	}
	q := s.quar
	bf.epoch = q.epoch.Load() // after the move: see quarantine.epoch
	q.mu.Lock()
	q.files[d] = bf
	q.recount()
	q.mu.Unlock()
	s.removeOutboard(d)
	if moved {
		s.log.Error("corrupt blob quarantined: its bytes do not hash to its digest; it is not served until it is put again", "store", s.dir, "digest", d.String(), "file", path, "fault", fault, "moved_to", dest)
		return
	}
	s.log.Error("corrupt blob quarantined in memory: its bytes do not hash to its digest; it is not served until it is put again", "store", s.dir, "digest", d.String(), "file", path, "fault", fault)
	s.logMemoryOnly(err)
}

// moveToQuarantine moves the blob file at path, which had the identity of
// fi when it was hashed, to dest. It returns false and the error if it
// cannot; errCopyGone if the file at path is gone or is another file now.
func (s *Store) moveToQuarantine(path, dest string, fi os.FileInfo) (bool, error) {
	if err := os.Mkdir(s.quar.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return false, err
	}
	if cur, err := os.Stat(path); err != nil || !os.SameFile(cur, fi) {
		return false, errCopyGone
	}
	if err := os.Rename(path, dest); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, errCopyGone
		}
		return false, err
	}
	// A writer may have renamed a good copy into place between the check
	// and the rename: then that is what was moved, and it goes back.
	if moved, err := os.Stat(dest); err == nil && !os.SameFile(moved, fi) {
		if err := os.Rename(dest, path); err != nil {
			s.log.Error("a good blob file was moved to the quarantine by mistake and cannot be moved back", "store", s.dir, "file", dest, "err", err)
		}
		return false, errCopyGone
	}
	if !s.noSync {
		// Best effort: a quarantine lost in a crash is found again.
		syncDir(filepath.Dir(path))
		syncDir(s.quar.dir)
	}
	return true, nil
}

// quarantinePacked quarantines the packed blob d at loc, whose bytes are
// not blob d's (fault says how): it records it in a marker file, or, if
// that cannot be written, in memory.
func (s *Store) quarantinePacked(d storeclient.Digest, loc packLoc, fault string) {
	q := s.quar
	marked := true
	err := os.Mkdir(q.dir, 0o755)
	if err == nil || errors.Is(err, os.ErrExist) {
		err = writeFileAtomic(filepath.Join(q.dir, d.Hex()+packedMarkerExt), []byte(marker(loc)), s.noSync)
	}
	if err != nil {
		marked = false
	}
	epoch := q.epoch.Load() // after the marker is written: see quarantine.epoch
	q.mu.Lock()
	q.packed[d] = badPacked{loc: loc, marked: marked, epoch: epoch}
	q.recount()
	q.mu.Unlock()
	s.locs.drop(d)
	s.removeOutboard(d)
	pack := filepath.Join(packsDir, packName(loc.pack))
	if marked {
		s.log.Error("corrupt packed blob quarantined: its bytes do not hash to its digest; it is not served until it is put again", "store", s.dir, "digest", d.String(), "file", pack, "offset", loc.off, "size", loc.size, "fault", fault)
		return
	}
	s.log.Error("corrupt packed blob quarantined in memory: its bytes do not hash to its digest; it is not served until it is put again", "store", s.dir, "digest", d.String(), "file", pack, "offset", loc.off, "size", loc.size, "fault", fault)
	s.logMemoryOnly(err)
}

// logMemoryOnly logs, once per Store, that quarantines are not persisted.
func (s *Store) logMemoryOnly(err error) {
	if s.quar.memoryOnlyLogged.Swap(true) {
		return
	}
	s.log.Warn("the quarantine cannot be written to the store's directory; quarantined blobs are refused by this process only, until it ends", "store", s.dir, "dir", s.quar.dir, "err", err)
}

// repairedFile drops the quarantine of blob d's file after the writer put
// a good blob file in its place.
func (s *Store) repairedFile(d storeclient.Digest) {
	q := s.quar
	if q.empty() {
		return
	}
	q.mu.Lock()
	bf, ok := q.files[d]
	if ok {
		delete(q.files, d)
		q.recount()
	}
	q.mu.Unlock()
	if !ok {
		return
	}
	if bf.moved {
		if err := os.Remove(bf.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove a repaired blob from the quarantine", "store", s.dir, "file", bf.path, "err", err)
		}
	}
	s.log.Info("quarantined blob repaired: a good copy was put", "store", s.dir, "digest", d.String())
}

// repairedPacked drops the quarantine of the packed blobs among entries,
// now committed at new places.
func (s *Store) repairedPacked(entries []packedEntry) {
	q := s.quar
	if q.empty() {
		return
	}
	for _, e := range entries {
		q.mu.Lock()
		bp, ok := q.packed[e.d]
		if ok && bp.loc != e.loc {
			delete(q.packed, e.d)
			q.recount()
		} else {
			ok = false
		}
		q.mu.Unlock()
		if !ok {
			continue
		}
		if bp.marked {
			path := filepath.Join(q.dir, e.d.Hex()+packedMarkerExt)
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("cannot remove a repaired blob's quarantine marker", "store", s.dir, "file", path, "err", err)
			}
		}
		s.log.Info("quarantined blob repaired: a good copy was packed", "store", s.dir, "digest", e.d.String(), "pack", packName(e.loc.pack), "offset", e.loc.off)
	}
}

// dropRepaired drops the quarantine entries of blobs that have a good copy
// again (put by a writer that did not know of the quarantine). The writer
// runs it when it opens the store.
func (s *Store) dropRepaired(ctx context.Context) {
	for _, d := range s.quar.digests() {
		p, err := s.findBlob(ctx, d, false)
		if err != nil {
			continue
		}
		if p.packed {
			s.repairedPacked([]packedEntry{{d, p.loc}})
		}
		s.repairedFile(d)
	}
}

// QuarantineCount returns how many quarantined blob copies this Store
// knows of that were not put again (a blob quarantined both as a blob file
// and as a packed blob counts twice). Quarantines of other processes are
// read at most once a second.
func (s *Store) QuarantineCount() int {
	s.reloadQuarantine()
	return int(s.quar.count.Load())
}

// checkCopy hashes the copy of blob d at p (a blob file, opened if p.f is
// nil, or a packed blob) and quarantines it if its bytes are wrong or
// missing; a copy that cannot be read is reported in the result but not
// quarantined (the error may pass). The error is as for checkBlobFile and
// checkPacked.
func (s *Store) checkCopy(d storeclient.Digest, p blobPlace, buf []byte, pace func(int) error) (copyCheck, error) {
	if p.packed {
		c, err := s.checkPacked(d, p.loc, buf, pace)
		if err == nil && c.fault != "" && !c.unreadable {
			s.quarantinePacked(d, p.loc, c.fault)
		}
		return c, err
	}
	f := p.f
	if f == nil {
		var err error
		if f, err = os.Open(s.blobPath(d)); errors.Is(err, os.ErrNotExist) {
			return copyCheck{}, errCopyGone
		} else if err != nil {
			return copyCheck{}, fmt.Errorf("check blob %s: %w", d, err)
		}
		defer f.Close()
	}
	c, err := checkFile(f, d, buf, pace)
	if err == nil && c.fault != "" && !c.unreadable {
		s.quarantineFile(d, f, c.fault)
	}
	return c, err
}

package local

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
)

// Small blobs (PutSmallBlob) are appended to pack files instead of getting
// a file each: DIR/packs/<8 hex digits>.pack, a new pack once one would
// grow past packMaxSize. Importers put the small files of a tree in NAR
// order, so the files of one directory lie next to each other in a pack:
// a cold read of a directory is one sequential read instead of a directory
// lookup, an inode read and a data read per file, and an import creates
// no inode per small file.
//
// Bucket "packed" of meta.db maps a blob digest to its place (pack, offset,
// length); bucket "packs" maps a pack id to its committed length. Both are
// written in the transaction of the next Directory or PathInfo (or at
// Close), after the syncfs that makes the appended bytes durable (see
// syncBlobs), so a committed entry always refers to bytes on disk. Until
// then the writer keeps the entries in memory, where its own readers find
// them; other processes see them once committed. Bytes appended but not
// committed when a writer is killed are never referred to, and the next
// writer cuts them off (openPacks).
const (
	packsDir = "packs"
	packExt  = ".pack"
	// packMaxSize is the size past which a new pack is started.
	packMaxSize = 256 << 20
	// packHeader starts every pack file. No blob starts at offset 0 of a
	// pack, so a FileOffset of 0 always means a blob file of its own.
	packHeader = "storefs-pack 1\n\x00"
	// packFlushEntries is how many uncommitted entries PutSmallBlob lets
	// pile up before it commits them itself (an import of one huge
	// directory would otherwise hold them all in memory).
	packFlushEntries = 1 << 16
	// locCacheMax bounds the cache of looked-up pack locations; when it
	// is full it is emptied.
	locCacheMax = 1 << 20
	// locSize is the size of an encoded packLoc.
	locSize = 4 + 8 + 8
)

var (
	bucketPacked = []byte("packed")
	bucketPacks  = []byte("packs")
)

// packLoc is where a packed blob lies: size bytes at off in pack id.
type packLoc struct {
	pack uint32
	off  int64
	size int64
}

func (l packLoc) encode() []byte {
	b := make([]byte, locSize)
	binary.BigEndian.PutUint32(b[0:], l.pack)
	binary.BigEndian.PutUint64(b[4:], uint64(l.off))
	binary.BigEndian.PutUint64(b[12:], uint64(l.size))
	return b
}

func decodeLoc(b []byte) (packLoc, error) {
	if len(b) != locSize {
		return packLoc{}, fmt.Errorf("pack location of %d bytes, want %d: %w", len(b), locSize, storeclient.ErrCorrupt)
	}
	l := packLoc{
		pack: binary.BigEndian.Uint32(b[0:]),
		off:  int64(binary.BigEndian.Uint64(b[4:])),
		size: int64(binary.BigEndian.Uint64(b[12:])),
	}
	if l.off < int64(len(packHeader)) || l.size < 0 || l.off > 1<<62 || l.size > 1<<62 {
		return packLoc{}, fmt.Errorf("bad pack location %+v: %w", l, storeclient.ErrCorrupt)
	}
	return l, nil
}

func packKey(id uint32) []byte { return binary.BigEndian.AppendUint32(nil, id) }

// packName is the file name of pack id.
func packName(id uint32) string { return fmt.Sprintf("%08x%s", id, packExt) }

// parsePackName parses a pack file name.
func parsePackName(name string) (uint32, bool) {
	hex, ok := strings.CutSuffix(name, packExt)
	if !ok || len(hex) != 8 || hex != lowerHex(hex) {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 32)
	return uint32(id), err == nil
}

func (s *Store) packPath(id uint32) string {
	return filepath.Join(s.dir, packsDir, packName(id))
}

// packedEntry is an uncommitted entry of the writer.
type packedEntry struct {
	d   storeclient.Digest
	loc packLoc
}

// appendFile is the writer's descriptor of a pack. writes counts the
// appends reserved in it and not finished: a pack that is no longer the
// current one is closed only after its last write.
type appendFile struct {
	f       *os.File
	writes  int
	retired bool
	// kicked is how far writeback of the pack has been started.
	kicked int64
	// stage holds the staged bytes of direct appends (packdirect.go);
	// nil when the pack is appended to through the page cache. df is the
	// pack opened with O_DIRECT for them; directRefused is set once the
	// filesystem refused a direct write.
	stage         *packStage
	df            *os.File
	directRefused atomic.Bool
}

// packWritebackStep is how many bytes are appended to a pack before their
// writeback to disk is started, so that the disk works while the import
// goes on instead of all at once in the syncfs before the metadata.
const packWritebackStep = 8 << 20

// packWriter appends small blobs to packs. It exists only in a read-write
// store, whose lock guarantees that it is the only one.
type packWriter struct {
	mu sync.Mutex
	// cur is the pack being appended to (nil before the first append);
	// end is the offset where the next blob goes (reserved under mu, so
	// blobs are written outside it, in parallel).
	cur   *appendFile
	curID uint32
	end   int64
	// lastID is the highest pack id there is; the next pack is lastID+1.
	lastID uint32
	// maxSize is packMaxSize (smaller in tests).
	maxSize int64
	// pending holds entries whose bytes are written but not committed to
	// meta.db; writing holds the digests being written right now, so that
	// a second put of one of them waits instead of appending it again.
	pending map[storeclient.Digest]packLoc
	writing map[storeclient.Digest]chan struct{}
	// known holds the first 8 bytes of the digest of every committed
	// entry (loaded on the first put) and of every entry this writer
	// appended: a put whose digest is not in it needs no database lookup
	// to know that the blob is not packed.
	known      map[uint64]struct{}
	knownReady bool
	// loadMu makes the first puts wait for one load of known instead of
	// each scanning the index.
	loadMu sync.Mutex
	// flushing is set while a put commits pending entries itself.
	flushing atomic.Bool
	// upgraded is set once DIR/VERSION says the layout has packs.
	upgraded bool
	// direct says appends are staged and written with O_DIRECT
	// (packdirect.go); inflight counts the stages being written, idle is
	// signalled when it drops to zero, and stageErr is the first failed
	// stage write: the entries staged there are not in the file, so every
	// commit fails from then on.
	direct   bool
	inflight int
	idle     *sync.Cond
	stageErr error
	// flushWaiting counts the commits waiting for inflight to drop to
	// zero; appends wait while it is not zero.
	flushWaiting int
}

func prefix(d storeclient.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

// openPacks prepares the writer's packs: it makes DIR/packs, cuts off what
// a killed writer appended but never committed, and removes packs with
// nothing committed in them. Under the writer's lock no one else appends,
// and readers never read past a committed entry.
func (s *Store) openPacks(ctx context.Context, version int) error {
	pw := &packWriter{
		pending:  make(map[storeclient.Digest]packLoc),
		writing:  make(map[storeclient.Digest]chan struct{}),
		upgraded: version >= LayoutVersion,
		maxSize:  packMaxSize,
		direct:   !s.noSync && !s.cachedWrites,
	}
	pw.idle = sync.NewCond(&pw.mu)
	dir := filepath.Join(s.dir, packsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	committed := make(map[uint32]int64)
	err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPacks)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return fmt.Errorf("bucket %q: bad record %x: %w", bucketPacks, k, storeclient.ErrCorrupt)
			}
			committed[binary.BigEndian.Uint32(k)] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return err
	}
	for id := range committed {
		pw.lastID = max(pw.lastID, id)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		id, ok := parsePackName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue // Verify reports it as stray
		}
		path := filepath.Join(dir, e.Name())
		c, ok := committed[id]
		if !ok {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove uncommitted pack: %w", err)
			}
			s.log.Info("removed a pack file with nothing committed in it", "store", s.dir, "pack", e.Name())
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("stat pack: %w", err)
		}
		if fi.Size() > c {
			if err := os.Truncate(path, c); err != nil {
				return fmt.Errorf("cut uncommitted tail of pack: %w", err)
			}
			s.log.Info("cut off blobs a writer appended but did not commit", "store", s.dir, "pack", e.Name(), "bytes", fi.Size()-c)
		}
	}
	// The last pack is appended to if it has room; the file is opened on
	// the first append.
	if c, ok := committed[pw.lastID]; ok && c < pw.maxSize {
		pw.curID, pw.end = pw.lastID, c
	}
	s.pw = pw
	return nil
}

// loadKnown fills pw.known from the committed index, once.
func (s *Store) loadKnown(ctx context.Context) error {
	pw := s.pw
	pw.mu.Lock()
	ready := pw.knownReady
	pw.mu.Unlock()
	if ready {
		return nil
	}
	pw.loadMu.Lock()
	defer pw.loadMu.Unlock()
	pw.mu.Lock()
	ready = pw.knownReady
	pw.mu.Unlock()
	if ready {
		return nil
	}
	known := make(map[uint64]struct{})
	for k, v := range s.scan(ctx, bucketPacked) {
		if k == nil {
			if errors.Is(v.err, errNoBucket) {
				break
			}
			return fmt.Errorf("load pack index: %w", v.err)
		}
		if len(k) == storeclient.DigestSize {
			known[binary.LittleEndian.Uint64(k[:8])] = struct{}{}
		}
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if !pw.knownReady {
		for p := range pw.known {
			known[p] = struct{}{}
		}
		pw.known, pw.knownReady = known, true
	}
	return nil
}

// appendBlob appends data, whose digest is d, to the current pack, unless
// this writer has it already (pending or being written). It returns
// whether it appended.
func (s *Store) appendBlob(d storeclient.Digest, data []byte) (bool, error) {
	pw := s.pw
	pw.mu.Lock()
	for {
		if _, ok := pw.pending[d]; ok {
			pw.mu.Unlock()
			return false, nil
		}
		if ch, ok := pw.writing[d]; ok {
			pw.mu.Unlock()
			<-ch
			pw.mu.Lock()
			continue
		}
		if pw.flushWaiting > 0 {
			// A commit waits for the stages being written: no new ones
			// until it has its entries (packInFileLocked).
			pw.idle.Wait()
			continue
		}
		break
	}
	if err := s.reserveLocked(int64(len(data))); err != nil {
		pw.mu.Unlock()
		return false, err
	}
	af, loc := pw.cur, packLoc{pack: pw.curID, off: pw.end, size: int64(len(data))}
	pw.end += loc.size
	if af.stage != nil {
		full, err := s.stageLocked(af, loc.off, data)
		if err != nil {
			pw.mu.Unlock()
			return false, err
		}
		s.addPendingLocked(d, loc)
		pw.mu.Unlock()
		if len(full) > 0 {
			if err := s.writeStages(af, full); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	af.writes++
	ch := make(chan struct{})
	pw.writing[d] = ch
	pw.mu.Unlock()

	_, err := af.f.WriteAt(data, loc.off)

	pw.mu.Lock()
	var kick, kickEnd int64 = -1, 0
	if end := loc.off + loc.size; err == nil && !s.noSync && end-af.kicked >= packWritebackStep {
		// Appends still under way below end are written back by the next
		// kick or the syncfs; this only starts the disk early.
		kick, kickEnd, af.kicked = af.kicked, end, end
		af.writes++ // the descriptor stays open for the kick
	}
	af.writes--
	if af.retired && af.writes == 0 {
		af.close()
	}
	delete(pw.writing, d)
	if err == nil {
		s.addPendingLocked(d, loc)
	}
	pw.mu.Unlock()
	close(ch)
	if kick >= 0 {
		startWriteback(af.f, kick, kickEnd-kick)
		pw.mu.Lock()
		af.writes--
		if af.retired && af.writes == 0 {
			af.close()
		}
		pw.mu.Unlock()
	}
	if err != nil {
		// The reserved bytes stay a hole that nothing refers to.
		return false, fmt.Errorf("append to pack %s: %w", packName(loc.pack), err)
	}
	return true, nil
}

// reserveLocked makes sure the current pack can take n more bytes,
// starting a new pack if needed. pw.mu is held.
func (s *Store) reserveLocked(n int64) error {
	pw := s.pw
	if pw.cur != nil && (pw.end+n <= pw.maxSize || pw.end == int64(len(packHeader))) {
		return nil
	}
	if pw.cur == nil && pw.curID != 0 && pw.end+n <= pw.maxSize {
		// Go on appending to the last pack of an earlier writer.
		f, err := os.OpenFile(s.packPath(pw.curID), os.O_RDWR, 0)
		if err == nil {
			pw.cur = &appendFile{f: f}
			if pw.direct {
				s.startStage(pw.cur, pw.end)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open pack for appending: %w", err)
		}
		// The last pack is gone (Verify reports its blobs missing):
		// append to a new one.
		s.log.Warn("the last pack file is missing; starting a new one", "store", s.dir, "pack", packName(pw.curID))
		pw.curID = 0
	}
	if !pw.upgraded {
		// The first pack of a store of an older layout: from now on a
		// storefs that knows no packs must refuse the store instead of
		// missing its packed blobs.
		content := fmt.Sprintf("%s %d\n", versionMagic, LayoutVersion)
		if err := writeFileAtomic(filepath.Join(s.dir, versionFile), []byte(content), s.noSync); err != nil {
			return fmt.Errorf("upgrade layout version: %w", err)
		}
		s.log.Info("store layout upgraded: small blobs are now packed", "store", s.dir, "version", LayoutVersion)
		pw.upgraded = true
	}
	id := pw.lastID + 1
	f, err := os.OpenFile(s.packPath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create pack: %w", err)
	}
	if _, err := f.WriteAt([]byte(packHeader), 0); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("create pack: %w", err)
	}
	s.retireLocked()
	pw.cur, pw.curID, pw.end, pw.lastID = &appendFile{f: f}, id, int64(len(packHeader)), id
	if pw.direct {
		s.startStage(pw.cur, pw.end)
	}
	return nil
}

// retireLocked closes the current pack's descriptor once its last write
// is done (readers use descriptors of their own), after writing what is
// staged of it. A failed write is kept in pw.stageErr. pw.mu is held.
func (s *Store) retireLocked() {
	pw := s.pw
	if pw.cur == nil {
		return
	}
	s.endStageLocked(pw.cur)
	pw.cur.retired = true
	if pw.cur.writes == 0 {
		pw.cur.close()
	}
	pw.cur = nil
}

// addPendingLocked records the uncommitted entry of a blob appended at
// loc, once its bytes are written (or staged). pw.mu is held.
func (s *Store) addPendingLocked(d storeclient.Digest, loc packLoc) {
	pw := s.pw
	// Counted before it is published: a commit that takes the entry must
	// also see that a sync is due (syncBlobs compares the counts), or it
	// would commit an entry whose bytes are not durable.
	s.blobWritten()
	pw.pending[d] = loc
	if pw.known == nil {
		pw.known = make(map[uint64]struct{})
	}
	pw.known[prefix(d)] = struct{}{}
}

// pendingLoc returns the uncommitted location of d, if this writer has
// one.
func (s *Store) pendingLoc(d storeclient.Digest) (packLoc, bool) {
	if s.pw == nil {
		return packLoc{}, false
	}
	s.pw.mu.Lock()
	defer s.pw.mu.Unlock()
	loc, ok := s.pw.pending[d]
	return loc, ok
}

// pendingEntries returns a copy of the uncommitted entries, whose bytes it
// has made sure are in their pack files. The caller commits them after
// syncBlobs, so it must take them before it.
func (s *Store) pendingEntries() ([]packedEntry, error) {
	if s.pw == nil {
		return nil, nil
	}
	s.pw.mu.Lock()
	defer s.pw.mu.Unlock()
	if s.pw.direct {
		if err := s.packInFileLocked(); err != nil {
			return nil, err
		}
	}
	es := make([]packedEntry, 0, len(s.pw.pending))
	for d, loc := range s.pw.pending {
		es = append(es, packedEntry{d, loc})
	}
	return es, nil
}

// putPacked writes entries to the index in tx, and raises the committed
// length of their packs. Their bytes must be durable already.
func putPacked(tx *bolt.Tx, entries []packedEntry) error {
	if len(entries) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketPacked)
	if err != nil {
		return fmt.Errorf("bucket %q: %w", bucketPacked, err)
	}
	pb, err := tx.CreateBucketIfNotExists(bucketPacks)
	if err != nil {
		return fmt.Errorf("bucket %q: %w", bucketPacks, err)
	}
	// In key order bbolt fills its pages instead of splitting them.
	slices.SortFunc(entries, func(a, b packedEntry) int { return bytes.Compare(a.d[:], b.d[:]) })
	ends := make(map[uint32]int64)
	for i := range entries {
		e := &entries[i]
		if err := b.Put(e.d[:], e.loc.encode()); err != nil {
			return fmt.Errorf("index packed blob %s: %w", e.d, err)
		}
		ends[e.loc.pack] = max(ends[e.loc.pack], e.loc.off+e.loc.size)
	}
	for id, end := range ends {
		k := packKey(id)
		if v := pb.Get(k); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= end {
			continue
		}
		if err := pb.Put(k, binary.BigEndian.AppendUint64(nil, uint64(end))); err != nil {
			return fmt.Errorf("record length of pack %s: %w", packName(id), err)
		}
	}
	return nil
}

// packedCommitted moves entries, now committed, from the writer's pending
// entries to the location cache (first to the cache, so a reader that
// misses one finds the other).
func (s *Store) packedCommitted(entries []packedEntry) {
	if len(entries) == 0 {
		return
	}
	for _, e := range entries {
		s.locs.put(e.d, e.loc)
	}
	s.pw.mu.Lock()
	for _, e := range entries {
		if loc, ok := s.pw.pending[e.d]; ok && loc == e.loc {
			delete(s.pw.pending, e.d)
		}
	}
	s.pw.mu.Unlock()
	s.repairedPacked(entries)
}

// flushPacks commits the pending entries on their own: after syncBlobs, in
// one transaction.
func (s *Store) flushPacks(ctx context.Context) error {
	entries, err := s.pendingEntries()
	if err != nil {
		return fmt.Errorf("commit packed blobs: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	if err := s.syncBlobs(); err != nil {
		return err
	}
	if err := s.withDB(ctx, true, func(tx *bolt.Tx) error { return putPacked(tx, entries) }); err != nil {
		return fmt.Errorf("commit packed blobs: %w", err)
	}
	s.packedCommitted(entries)
	return nil
}

// closePacks commits what is pending and closes the pack being appended.
func (s *Store) closePacks() error {
	if s.pw == nil {
		return nil
	}
	// Close has no context, and what is pending must be committed.
	err := s.flushPacks(context.Background())
	s.pw.mu.Lock()
	defer s.pw.mu.Unlock()
	s.retireLocked()
	if err == nil {
		err = s.pw.stageErr
	}
	return err
}

// errNoBucket is the scan error for a bucket that does not exist (a store
// of an older layout has no pack buckets).
var errNoBucket = errors.New("no such bucket")

// lookupPacked returns where d is packed: an uncommitted entry of this
// writer, a cached location, or the committed index.
func (s *Store) lookupPacked(ctx context.Context, d storeclient.Digest) (packLoc, bool, error) {
	if loc, ok := s.cachedLoc(d); ok {
		return loc, true, nil
	}
	return s.indexLoc(ctx, d)
}

// cachedLoc looks d up without touching the database.
func (s *Store) cachedLoc(d storeclient.Digest) (packLoc, bool) {
	if loc, ok := s.pendingLoc(d); ok {
		return loc, true
	}
	return s.locs.get(d)
}

// indexLoc looks d up in the committed index and caches what it finds.
func (s *Store) indexLoc(ctx context.Context, d storeclient.Digest) (packLoc, bool, error) {
	var loc packLoc
	var found bool
	err := s.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPacked)
		if b == nil {
			return nil
		}
		v := b.Get(d[:])
		if v == nil {
			return nil
		}
		l, err := decodeLoc(v)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		loc, found = l, true
		return nil
	})
	if err != nil {
		return packLoc{}, false, err
	}
	if found {
		s.locs.put(d, loc)
	}
	return loc, found, nil
}

// locCache caches pack locations. A blob moves only when its copy is
// quarantined and put again (then the stale entry is dropped, see
// findBlob); only found locations are cached.
type locCache struct {
	mu sync.RWMutex
	m  map[storeclient.Digest]packLoc
}

func (c *locCache) get(d storeclient.Digest) (packLoc, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	loc, ok := c.m[d]
	return loc, ok
}

// drop forgets d's location (its copy there is quarantined).
func (c *locCache) drop(d storeclient.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, d)
}

func (c *locCache) put(d storeclient.Digest, loc packLoc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= locCacheMax {
		c.m = make(map[storeclient.Digest]packLoc)
	}
	c.m[d] = loc
}

// packFiles shares one read-only descriptor per pack among the blob
// readers of a store, so opening a packed blob costs no system call. A
// descriptor is closed when the store is closed and no reader uses it.
type packFiles struct {
	mu     sync.Mutex
	files  map[uint32]*packFile
	closed bool
}

type packFile struct {
	id   uint32
	f    *os.File
	refs int
}

// acquire returns the shared descriptor of pack id; release it when done.
func (s *Store) acquirePack(id uint32) (*packFile, error) {
	p := &s.packFiles
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	pf := p.files[id]
	if pf == nil {
		f, err := os.Open(s.packPath(id))
		if err != nil {
			return nil, fmt.Errorf("open pack: %w", err)
		}
		if p.files == nil {
			p.files = make(map[uint32]*packFile)
		}
		pf = &packFile{id: id, f: f}
		p.files[id] = pf
	}
	pf.refs++
	return pf, nil
}

func (s *Store) releasePack(pf *packFile) {
	p := &s.packFiles
	p.mu.Lock()
	defer p.mu.Unlock()
	pf.refs--
	if p.closed && pf.refs == 0 {
		pf.f.Close()
		delete(p.files, pf.id)
	}
}

// closePackFiles closes the descriptors no reader uses; the others are
// closed by the last reader's Close.
func (s *Store) closePackFiles() {
	p := &s.packFiles
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for id, pf := range p.files {
		if pf.refs == 0 {
			pf.f.Close()
			delete(p.files, id)
		}
	}
}

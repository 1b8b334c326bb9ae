// Package local is the embedded on-disk castore of storefs: the default
// store, and the `local:DIR` store URL (a bare path means the same).
//
// # Layout
//
//	DIR/VERSION              "storefs-local-store 3": the layout version
//	DIR/lock                 the inter-process lock (see Open)
//	DIR/blobs/ab/<hex>       one read-only file per blob written by a blob
//	                         writer (big blobs), named by the 64
//	                         hexadecimal characters of its BLAKE3 digest, in
//	                         256 shard directories made with the store
//	DIR/packs/<id>.pack      the small blobs of PutSmallBlob, appended one
//	                         after the other in the order they are put, a
//	                         new pack past 256 MiB (see pack.go)
//	DIR/outboards/ab/<hex>   the bao outboard of a blob of more than 1 MiB,
//	                         named like its blob file (see Outboards)
//	DIR/tmp/                 blobs and outboards being written (same
//	                         filesystem, so a finished one is renamed into
//	                         place)
//	DIR/quarantine/<hex>     a blob file whose bytes no longer hash to its
//	                         digest, moved out of blobs/ (see Quarantine)
//	DIR/quarantine/<hex>.packed
//	                         a packed blob found corrupt: "pack <id>.pack
//	                         offset N size M", the range readers refuse
//	DIR/meta.db              bbolt: bucket "directories" (32-byte digest →
//	                         canonical Directory encoding), bucket
//	                         "pathinfos" (20-byte store path digest →
//	                         PathInfo protobuf), bucket "packed" (blob
//	                         digest → pack, offset, length) and bucket
//	                         "packs" (pack id → committed length)
//
// Layout 2 had no packs. A store of layout 2 is read as it is; its writer
// turns it into layout 3 when it creates the first pack, so that an older
// storefs then refuses the store instead of missing its packed blobs.
//
// # Locking
//
// Many readers and one writer may use a store at once, in any processes.
// A read-write opener holds DIR/lock exclusively for its whole lifetime, so
// writers exclude each other: a second writer waits up to
// Options.LockTimeout, then fails with "store DIR is locked by pid N". The
// lock is an open file description lock (Linux), so two writers in one
// process exclude each other just like two processes; a classic POSIX lock
// beside it lets a refused writer name the holder's pid. A read-only
// opener takes no long-lived lock.
//
// meta.db is opened only for the length of one transaction (see
// Store.withDB): a reader opens it read-only for each GetDirectory,
// GetPathInfo or page of a scan, the writer read-write for each
// PutDirectories, PutPathInfo or read of its own. bbolt's flock on meta.db
// (shared for readers, exclusive for the writer) is so held for
// milliseconds, and a conflicting open waits for it (dbOpenTimeout).
// Readers therefore keep serving while an import runs, see each committed
// transaction whole and never a half-written one, and see a new PathInfo as
// soon as its transaction commits. Blobs need no lock: they appear under
// their final names only complete. Readers write nothing in DIR/tmp but
// outboards; a writer that clears DIR/tmp when it opens the store only
// makes such an outboard not kept.
//
// A Store has meta.db open in at most maxDBOpens (8) transactions at once,
// however many requests come in: the others wait for a turn (or until
// their context ends), so meta.db costs a bounded number of descriptors
// and mappings.
//
// # Consistency
//
// A blob file appears under its final name only complete (it is written in
// tmp and then renamed into place); a packed blob is found only through its
// index entry, committed after its bytes are durable. Blobs are not fsynced
// one by one: before any Directory or PathInfo is written, one syncfs(2)
// makes every blob put so far durable (see syncBlobs), and the pack index
// entries are committed in the same transaction as the metadata, so even
// after a power loss metadata never refers to a blob that is not on disk. A Directory is stored only if every child Directory it names is stored
// with the recorded size; a PathInfo is stored only if its root content is
// stored. An importer writes blobs, then Directories leaves to root, then
// the PathInfo, so a process killed at any point leaves a store in which
// every PathInfo has all of its content. Data is hashed when it is written
// and again by Verify; GetDirectory re-hashes what it reads (it is cheap),
// blob reads do not (the store is trusted-local, see TrustedLocal): bit rot
// in a blob is found by the scrubber or, with Options.VerifyOnOpen, at the
// blob's first open, and quarantined (see Quarantine).
//
// # Quarantine
//
// Bit rot in a blob is found by the scrubber (Store.Scrub), which re-hashes
// every blob slowly in the background, or at a blob's first open with
// Options.VerifyOnOpen, and by Verify (which reports it and changes
// nothing). A blob whose stored bytes no longer hash to its digest is
// quarantined and logged once: readers refuse it from then on (OpenBlob,
// StatBlob, BlobFile, and ReadAt of readers opened before; not a file
// handed to the kernel before, for FUSE passthrough or splice) with an error
// wrapping ErrQuarantined and storeclient.ErrCorrupt, so the filesystem
// answers EIO, not the wrong bytes and not ENOENT. Where the store's
// directory is writable the quarantine persists: a blob file is moved to
// DIR/quarantine (so the store no longer has it and the next import of
// the same content writes a good copy in its place), a packed blob gets a
// marker there (the writer treats it as absent, appends a good copy when
// it is put again and points the index at it). A quarantine names the bad
// copy (a blob file by its inode, a packed blob by its place), not the
// digest, so a repaired copy is served at once by every process; the
// writer removes the quarantine of a blob it repairs. Where DIR cannot be
// written, the quarantine lasts as long as the Store, and that is logged
// once. Verify reports quarantined blobs that were not put again.
//
// # Outboards
//
// A blob of more than 1 MiB (outboardThreshold: the blobs an import writes
// as files of their own) has its bao outboard (storeclient's format, see
// storeclient/bao.go: 64 bytes per 64 KiB of blob) kept in
// DIR/outboards, so that BlobOutboard, which the gRPC server sends for
// verified streaming, costs a file read instead of a read and hash of the
// whole blob. The blob writer computes it while the blob is written and
// keeps it at Commit; a smaller blob's outboard is computed when asked
// for. An outboard is derived data, written through DIR/tmp and renamed
// into place, never synced on its own, and checked in full against the
// blob's digest whenever it is read (checkOutboard), so a torn or rotted
// outboard is never served: it is computed again from the blob and
// rewritten. Any opener (a reader too) writes a missing or wrong outboard
// when it meets one, and so do Verify and the scrubber for every good
// blob they hash; so the outboards of a store written by a storefs older
// than outboards appear with use. Quarantining a blob removes its
// outboard; Verify and the scrubber remove the outboards of blobs the
// store does not have.
//
// # Damage
//
// A meta.db damaged on disk (bit rot, a bad sector, a file cut short)
// fails the transactions that meet the damage with an error wrapping
// ErrDamaged (and storeclient.ErrCorrupt): bbolt's panics and faults on a
// bad page are recovered at the transaction boundary (see Store.withDB),
// so the rest of the store keeps being served. A read-only Open succeeds
// on a damaged meta.db (it logs the damage once), so that blobs can still
// be read and Verify can report what is damaged; a read-write Open fails if
// the damage is in what it reads (the meta pages, the bucket list, the
// freelist).
package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"

	"github.com/storefs/storefs/storeclient"
)

// LayoutVersion is the version of the on-disk layout this package reads
// and writes. It is recorded in DIR/VERSION; a store with another version
// is refused with an error instead of being misread.
const LayoutVersion = 3

// oldestLayoutVersion is the oldest layout this package still reads (and
// upgrades when it packs a blob into it).
const oldestLayoutVersion = 2

// DefaultLockTimeout is how long a read-write Open waits for another
// writer to close the store when Options.LockTimeout is zero.
const DefaultLockTimeout = 2 * time.Second

// maxDBOpens bounds how many transactions of one Store have meta.db open
// at once (each holds a descriptor and a mapping of it). A reader's
// transaction is an open, a flock, a mapping, a lookup and an unmapping:
// tens of microseconds of mostly kernel work, so more of them in flight
// than there are CPUs gain nothing, and 8 covers the CPUs a storefs host
// usually gives a daemon. Without a bound every concurrent request has
// meta.db open (a 9P client with many requests in flight had ~190 open at
// once); callers past the bound wait, as long as their context lets them.
const maxDBOpens = 8

// dbOpenTimeout is how long a transaction waits to open meta.db while
// another opener has it open in a conflicting mode. Openers hold it only
// for one transaction each, so the wait is normally milliseconds; the
// bound only keeps a wedged process from blocking the others forever.
const dbOpenTimeout = 30 * time.Second

const (
	versionMagic = "storefs-local-store"
	versionFile  = "VERSION"
	lockFile     = "lock"
	blobsDir     = "blobs"
	tmpDir       = "tmp"
	dbFile       = "meta.db"
)

var (
	bucketDirectories = []byte("directories")
	bucketPathInfos   = []byte("pathinfos")
)

// Options says how a store is opened.
type Options struct {
	// ReadOnly opens the store for reading only. Read-only openers take no
	// long-lived lock: any number of them, in any processes, may use a
	// store at once, next to one read-write opener. A read-write opener
	// holds the store's lock exclusively and so excludes other writers.
	ReadOnly bool
	// LockTimeout is how long a read-write Open waits for another writer
	// to close the store before it fails with "store DIR is locked by pid
	// N" (and how long an Open that must create the store waits for the
	// lock). Zero means DefaultLockTimeout; a negative value means not to
	// wait.
	LockTimeout time.Duration
	// NoSync skips fsync of blobs, directories and the database. A killed
	// process still leaves a consistent store (the kernel keeps the
	// writes), but a power loss or kernel crash may lose or corrupt recent
	// writes. Meant for tests and throw-away stores.
	NoSync bool
	// CachedWrites writes every blob through the page cache. By default a
	// store that syncs writes big blobs with O_DIRECT, past the page cache:
	// right for an import, whose blobs are not read again soon. A store
	// whose blobs are read right after they are written, such as the
	// cache store of a binary cache, reads them from memory instead of
	// from disk with it.
	CachedWrites bool
	// Logger receives the store's log lines; nil means slog.Default().
	Logger *slog.Logger
	// VerifyOnOpen hashes every blob in full at its first open in this
	// process (OpenBlob, BlobFile; the digests verified are remembered,
	// up to 64Ki of them), before the open returns: a blob whose bytes do
	// not hash to its digest is quarantined (see Quarantine) and the open
	// fails. It costs a read and hash of the whole blob at its first open
	// (0.5 to 1 ms per MiB from the page cache, BenchmarkVerifyOnOpen);
	// later opens cost nothing more. The scrubber finds the same bit rot
	// later, without that cost.
	VerifyOnOpen bool
}

// Store is the embedded on-disk storeclient.Store. It is safe for
// concurrent use by many goroutines.
type Store struct {
	dir      string
	readOnly bool
	noSync   bool
	// cachedWrites is Options.CachedWrites.
	cachedWrites bool
	log          *slog.Logger
	// lock is the writer's lock on DIR/lock; nil for a read-only store.
	lock   *storeLock
	closed atomic.Bool
	// damageLogged is set once a damaged meta.db was logged at Error
	// level (see reportDamage).
	damageLogged atomic.Bool
	// brokenOpen is the damage error of a panicked bolt.Open of the
	// writer (see setOpenBroken).
	brokenMu   sync.Mutex
	brokenOpen error
	// dbMu serializes the transactions of a read-write store: each opens
	// meta.db exclusively, so two at once would only wait for each other
	// in bbolt's slower flock polling.
	dbMu sync.Mutex

	// writeBufs pools the write buffers of blob writers; directBufs the
	// aligned chunks of their direct writes (see blobwriter.go).
	writeBufs  sync.Pool
	directBufs sync.Pool
	// blobGen counts blobs moved into place (or found in place) by this
	// process; syncedGen is the count that the last syncfs covered.
	blobGen   atomic.Uint64
	syncMu    sync.Mutex
	syncedGen uint64

	// dbSlots holds a token for every transaction that has meta.db
	// open (see maxDBOpens).
	dbSlots chan struct{}
	// testHookDBOpen, if set, is called while a transaction has meta.db
	// open (tests only).
	testHookDBOpen func()

	// pw appends small blobs to packs; nil for a read-only store.
	pw *packWriter
	// locs caches where packed blobs are; packFiles shares the pack
	// descriptors of blob readers.
	locs      locCache
	packFiles packFiles
	// quar is the set of quarantined blobs (quarantine.go).
	quar *quarantine
	// scrub is the scrubber's state (scrub.go).
	scrub scrubState
	// verified holds the digests verified at their first open; nil
	// without Options.VerifyOnOpen. verifyFlight shares the hashing of
	// concurrent first opens, verifyBufs their buffers (verifyopen.go).
	verified     *lru.Cache[storeclient.Digest, struct{}]
	verifyFlight singleflight.Group
	verifyBufs   sync.Pool
	// outboardFlight shares the computing of a kept outboard that is
	// missing among concurrent BlobOutboard calls; outboardWarned is set
	// once a failure to keep one was logged as a warning (outboard.go).
	outboardFlight singleflight.Group
	outboardWarned atomic.Bool
}

var _ storeclient.Store = (*Store)(nil)

// errReadOnly is returned by every write to a store opened read-only.
var errReadOnly = errors.New("store is opened read-only")

// errClosed is returned by every call after Close.
var errClosed = errors.New("local store is closed")

// Open opens the store in dir, creating it if dir does not exist or is an
// empty directory: the default store is created on first use, by readers
// too (a read-only opener then briefly holds the lock exclusively while it
// creates the store). A directory that holds other files and no VERSION
// file is refused rather than filled.
//
// A read-write open holds an exclusive lock until Close; another
// read-write open waits up to opts.LockTimeout, then fails with an error
// naming the holder's pid. A read-only open holds no lock (see Locking in
// the package documentation).
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	dir = abs
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	if _, err := os.Stat(filepath.Join(dir, versionFile)); errors.Is(err, os.ErrNotExist) {
		if err := create(ctx, dir, timeout, opts.NoSync); err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}

	s := &Store{dir: dir, readOnly: opts.ReadOnly, noSync: opts.NoSync, cachedWrites: opts.CachedWrites, log: opts.Logger,
		dbSlots: make(chan struct{}, maxDBOpens), quar: newQuarantine(dir)}
	s.writeBufs.New = func() any { return bufio.NewWriterSize(nil, writeBufferSize) }
	if opts.VerifyOnOpen {
		var err error
		if s.verified, err = lru.New[storeclient.Digest, struct{}](verifiedCacheSize); err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
		s.verifyBufs.New = func() any {
			b := make([]byte, verifyOpenBufferSize)
			return &b
		}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if !opts.ReadOnly {
		lk, err := acquireLock(ctx, dir, timeout)
		if err != nil {
			return nil, err
		}
		s.lock = lk
	}
	if err := s.open(ctx); err != nil {
		if s.lock != nil {
			s.lock.release()
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return s, nil
}

// open does the part of Open that runs after the writer's lock is taken.
func (s *Store) open(ctx context.Context) error {
	version, err := checkVersion(s.dir)
	if err != nil {
		return err
	}
	if !s.readOnly {
		// Under the exclusive lock nobody else writes blobs, and readers
		// write only outboards in tmp (one removed while it is written
		// is just not kept): whatever is in tmp was left by a killed
		// process.
		n, err := clearTmp(s.dir)
		if err != nil {
			return err
		}
		if n > 0 {
			s.log.Info("removed partial blobs or outboards left by a process that did not finish", "store", s.dir, "files", n)
		}
	}
	err = s.withDB(ctx, false, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDirectories, bucketPathInfos} {
			if _, err := requiredBucket(tx, b); err != nil {
				return err
			}
		}
		return nil
	})
	if s.readOnly && errors.Is(err, ErrDamaged) {
		// A reader serves what the damage leaves readable (blobs, and
		// the records on undamaged pages), and Verify reports the
		// damage; the first damage was logged.
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.quar.load(); err != nil {
		s.log.Warn("cannot read the quarantine; quarantined blobs may be served", "store", s.dir, "err", err)
	}
	if s.readOnly {
		return nil
	}
	if err := s.openPacks(ctx, version); err != nil {
		return err
	}
	s.dropRepaired(ctx)
	return nil
}

// withDB runs fn in one transaction of meta.db (a read-write one if write
// is set), opening the database just for it: read-only for a read-only
// store, read-write for the writer. bbolt's flock on meta.db is so held
// only while fn runs (and the commit is synced), which lets readers and the
// writer of other processes take turns; an open waits up to dbOpenTimeout
// for a conflicting holder. At most maxDBOpens transactions of a Store
// have meta.db open at once; one that waits for its turn gives up when ctx
// is done. fn must not keep references into the transaction's memory.
//
// A damaged meta.db makes bbolt panic (its page assertions) or fault (a
// page number past the end of the mapping): both are recovered here, at
// the transaction boundary, and returned as an error wrapping ErrDamaged,
// so that one damaged page fails the requests that need it instead of
// taking the process and every frontend down.
func (s *Store) withDB(ctx context.Context, write bool, fn func(*bolt.Tx) error) (err error) {
	select {
	case s.dbSlots <- struct{}{}:
		defer func() { <-s.dbSlots }()
	case <-ctx.Done():
		return fmt.Errorf("wait to open %s: %w", dbFile, ctx.Err())
	}
	if !s.readOnly {
		s.dbMu.Lock()
		defer s.dbMu.Unlock()
	}
	if err := s.openBroken(); err != nil {
		return err
	}
	what := "read transaction"
	if write {
		what = "write transaction"
	}
	// Faults while bbolt reads its mapping panic instead of crashing the
	// process; the setting is this goroutine's and is restored.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var file *os.File // meta.db's descriptor, to close if bolt.Open panics
	var db *bolt.DB
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if db == nil {
			// bolt.Open itself panicked: a writer's open reads the
			// freelist, and the database is mapped already.
			err = damaged("open", panicError(r))
			if file != nil {
				releaseFile(file)
			}
			if !s.readOnly {
				s.setOpenBroken(err)
			}
		} else {
			err = damaged(what, panicError(r))
			s.closeDamaged(db, file)
		}
		s.reportDamage(err)
	}()
	db, err = bolt.Open(filepath.Join(s.dir, dbFile), 0o644, &bolt.Options{
		ReadOnly:     s.readOnly,
		Timeout:      dbOpenTimeout,
		NoSync:       s.noSync,
		FreelistType: bolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
	if err != nil {
		if isDamagedOpen(err) {
			err = damaged("open", err)
			s.reportDamage(err)
			return err
		}
		return fmt.Errorf("open %s: %w", dbFile, err)
	}
	if s.testHookDBOpen != nil {
		s.testHookDBOpen()
	}
	if write {
		err = db.Update(fn)
	} else {
		err = db.View(fn)
	}
	if cerr := db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", dbFile, cerr)
	}
	return err
}

// create makes a new store in dir, under the exclusive lock, unless
// another process made it first. VERSION is written last, so a store
// whose creation was interrupted is created again.
func create(ctx context.Context, dir string, timeout time.Duration, noSync bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lk, err := acquireLock(ctx, dir, timeout)
	if err != nil {
		return err
	}
	defer lk.release()
	if _, err := os.Stat(filepath.Join(dir, versionFile)); err == nil {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch e.Name() {
		case lockFile, blobsDir, tmpDir, packsDir, dbFile, versionFile + ".tmp":
		default:
			return fmt.Errorf("%s holds %q but no %s file: not a storefs store, refusing to use it", dir, e.Name(), versionFile)
		}
	}
	for _, d := range append([]string{blobsDir, tmpDir, packsDir}, shardDirs()...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o644, &bolt.Options{Timeout: max(timeout, time.Second), NoSync: noSync})
	if err != nil {
		return fmt.Errorf("create %s: %w", dbFile, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDirectories, bucketPathInfos} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", dbFile, err)
	}
	content := fmt.Sprintf("%s %d\n", versionMagic, LayoutVersion)
	return writeFileAtomic(filepath.Join(dir, versionFile), []byte(content), noSync)
}

// checkVersion reads DIR/VERSION, refuses a layout this package does not
// know and returns the store's layout version.
func checkVersion(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, versionFile))
	if err != nil {
		return 0, fmt.Errorf("read layout version: %w", err)
	}
	magic, v, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || magic != versionMagic {
		return 0, fmt.Errorf("%s is %q, want %q: not a storefs store", versionFile, strings.TrimSpace(string(b)), fmt.Sprintf("%s %d", versionMagic, LayoutVersion))
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: bad layout version %q", versionFile, v)
	}
	if n < oldestLayoutVersion {
		return 0, fmt.Errorf("store has layout version %d from an older storefs, this storefs reads only versions %d to %d: import the paths into a new store", n, oldestLayoutVersion, LayoutVersion)
	}
	if n > LayoutVersion {
		return 0, fmt.Errorf("store has layout version %d, this storefs reads only versions %d to %d (use a storefs that matches the store)", n, oldestLayoutVersion, LayoutVersion)
	}
	return n, nil
}

// writeFileAtomic writes a small file through a temporary name, so that
// path either does not exist or has all of b.
func writeFileAtomic(path string, b []byte, noSync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && !noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if noSync {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a directory's entries (created, renamed files) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// clearTmp removes the partial blobs of a writer that was killed and
// returns how many it removed.
func clearTmp(dir string) (int, error) {
	tmp := filepath.Join(dir, tmpDir)
	entries, err := os.ReadDir(tmp)
	if errors.Is(err, os.ErrNotExist) {
		return 0, os.Mkdir(tmp, 0o755)
	}
	if err != nil {
		return 0, fmt.Errorf("clear %s: %w", tmp, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return 0, fmt.Errorf("clear %s: %w", tmp, err)
		}
	}
	return len(entries), nil
}

func lockPath(dir string) string { return filepath.Join(dir, lockFile) }

// Dir returns the store's directory (absolute).
func (s *Store) Dir() string { return s.dir }

// ReadOnly reports whether the store was opened read-only.
func (s *Store) ReadOnly() bool { return s.readOnly }

// TrustedLocal reports that data read from this store needs no
// re-verification: the store hashes everything when it is written,
// `storefs verify` (Verify) re-hashes it on demand, and the scrubber
// (Scrub) or Options.VerifyOnOpen find bit rot and quarantine it.
func (s *Store) TrustedLocal() bool { return true }

// Close commits the packed blobs put since the last metadata write and
// releases the writer's lock (meta.db is open only during a transaction).
// Calls after Close fail; Close itself may be called more than once. Blob
// readers still open keep working until they are closed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	defer s.closePackFiles()
	if s.lock == nil {
		return nil
	}
	// Packed blobs put since the last metadata write are committed, so
	// that the next opener finds them.
	err := s.closePacks()
	// Wait for a transaction under way, so the lock outlives it.
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if rerr := s.lock.release(); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return nil
}

// usable fails if the store is closed, or, for a write, read-only.
func (s *Store) usable(ctx context.Context, write bool) error {
	if s.closed.Load() {
		return errClosed
	}
	if write && s.readOnly {
		return fmt.Errorf("store %s: %w", s.dir, errReadOnly)
	}
	return ctx.Err()
}

// shardDirs returns the 256 blob shard directories, blobs/00 … blobs/ff.
func shardDirs() []string {
	dirs := make([]string, 0, 256)
	for i := 0; i < 256; i++ {
		dirs = append(dirs, filepath.Join(blobsDir, fmt.Sprintf("%02x", i)))
	}
	return dirs
}

// blobWritten records that a blob was moved into place and may not be on
// disk yet.
func (s *Store) blobWritten() { s.blobGen.Add(1) }

// syncBlobs makes every blob this process has put durable before metadata
// that may refer to it is written: one syncfs(2) of the store's filesystem
// for any number of blobs, instead of an fsync of every file and of its
// directory. Directories and PathInfos are written only after it, and bbolt
// syncs its own commits, so after a power loss a stored Directory or
// PathInfo never refers to a blob that did not reach the disk. Blobs not
// yet covered by a sync may be lost or cut short by a power loss; the
// importer's existence check compares lengths, and `storefs verify` finds
// any such leftover.
func (s *Store) syncBlobs() error {
	if s.noSync {
		return nil
	}
	gen := s.blobGen.Load()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncedGen >= gen {
		return nil
	}
	if err := syncFilesystem(s.dir); err != nil {
		return fmt.Errorf("sync blobs: %w", err)
	}
	s.syncedGen = gen
	return nil
}

package local

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/storeclient"
)

// ErrDamaged is wrapped by every error that reports meta.db as damaged: a
// page that bbolt cannot use (it panics on those, and they are recovered
// in withDB), meta pages that do not validate, a bucket that should be
// there and is not. errors.Is(err, storeclient.ErrCorrupt) is true for
// these errors too, so frontends answer EIO and gRPC DATA_LOSS.
var ErrDamaged = errors.New("damaged database")

// damageError reports meta.db as damaged.
type damageError struct {
	what  string // what was being done, e.g. "read transaction"
	cause error
}

func (e *damageError) Error() string {
	return fmt.Sprintf("%s is damaged: %s: %v", dbFile, e.what, e.cause)
}

func (e *damageError) Unwrap() error { return e.cause }

// Is makes the error match ErrDamaged and storeclient.ErrCorrupt.
func (e *damageError) Is(target error) bool {
	return target == ErrDamaged || target == storeclient.ErrCorrupt
}

// damaged returns the damage error for what, caused by cause.
func damaged(what string, cause error) error {
	return &damageError{what: what, cause: cause}
}

// panicError turns a recovered panic value into an error: bbolt panics
// with strings ("assertion failed: …"), a page past the mapping faults
// (a runtime.Error, see debug.SetPanicOnFault).
func panicError(r any) error {
	if err, ok := r.(error); ok {
		return err
	}
	return fmt.Errorf("%v", r)
}

// isDamagedOpen reports whether an error of bolt.Open means that the
// file is not a usable database (as opposed to, say, a permission error
// or a lock timeout).
func isDamagedOpen(err error) bool {
	return errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrInvalidMapping)
}

// requiredBucket returns bucket name of tx, which every store has; its
// absence means the database is damaged.
func requiredBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, damaged(fmt.Sprintf("bucket %q", name), errors.New("not found"))
	}
	return b, nil
}

// damageCloseWait bounds how long closing meta.db after a recovered panic
// may take: a panic in the middle of bbolt may leave one of its locks
// held, and Close would then wait for it forever.
const damageCloseWait = time.Second

// openBroken returns the error of an earlier bolt.Open of this writer that
// panicked, if there was one.
func (s *Store) openBroken() error {
	s.brokenMu.Lock()
	defer s.brokenMu.Unlock()
	return s.brokenOpen
}

// setOpenBroken records that bolt.Open panicked in this writer: with a
// damaged freelist (which a writer's open reads) it would panic again at
// every transaction, and each time leak a mapping of meta.db. Under the
// writer's lock nobody else changes meta.db, so the damage stays, and
// later transactions fail with err at once.
func (s *Store) setOpenBroken(err error) {
	s.brokenMu.Lock()
	defer s.brokenMu.Unlock()
	s.brokenOpen = err
}

// closeDamaged closes db after a panic was recovered in one of its
// transactions. If that does not finish in damageCloseWait, it closes the
// database's file itself, which releases the flock (other processes can
// then use meta.db) and the descriptor; the mapping and the goroutine
// stuck in Close are what leaks.
func (s *Store) closeDamaged(db *bolt.DB, f *os.File) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { recover() }() // Close itself may trip on the damage
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		db.Close()
	}()
	select {
	case <-done:
	case <-time.After(damageCloseWait):
		s.log.Error("meta.db left open after a damaged transaction: its file is closed, its mapping leaks", "store", s.dir)
		if f != nil {
			releaseFile(f)
		}
	}
}

// releaseFile drops the flock that bbolt holds on meta.db through f and
// closes f. Closing alone is not enough when a mapping of the file leaks
// (bbolt mapped it before it panicked): the mapping keeps the open file
// description alive, and the lock with it, so that every other opener
// would wait for it in vain.
func releaseFile(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Flock(int(fd), unix.LOCK_UN) })
	}
	f.Close()
}

// reportDamage logs the first damage this Store meets at Error level and
// the others at Debug level, so that a busy daemon does not write a line
// per request.
func (s *Store) reportDamage(err error) {
	if s.damageLogged.Swap(true) {
		s.log.Debug("meta.db is damaged", "store", s.dir, "err", err)
		return
	}
	s.log.Error("meta.db is damaged: requests that need the damaged part fail; storefs verify reports what is damaged, and importing the store paths into a new store repairs it", "store", s.dir, "err", err)
}

package local

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/storefs/storefs/storeclient"
)

// Verify, the scrubber (Scrub) and Options.VerifyOnOpen check a stored
// copy of a blob the same way, here: a blob file of its own is hashed
// whole, a packed blob is hashed in its range of the pack.

// errCopyGone is returned for a blob file that no longer exists (removed
// or quarantined after its caller found it).
var errCopyGone = errors.New("blob file is gone")

// copyCheck is the outcome of hashing one stored copy of a blob.
type copyCheck struct {
	// n is the number of bytes read.
	n int64
	// fault says what is wrong with the copy ("" if its bytes hash to
	// its digest), for a Problem's Detail and a log line.
	fault string
	// unreadable is set when the fault is an error reading the copy
	// rather than wrong or missing bytes: it may pass, so the scrubber
	// reports it without quarantining the blob.
	unreadable bool
}

// hashRange hashes size bytes of r from off, len(buf) bytes at a time. It
// returns the digest and how many bytes it read. Before every read it
// calls pace, if not nil, with the read's length: an error from pace
// (a cancelled context) ends the hashing with that error wrapped in a
// *paceError. A read error, or the end of r before size bytes, is
// returned as it is (io.ErrUnexpectedEOF for the latter).
func hashRange(r io.ReaderAt, off, size int64, buf []byte, pace func(n int) error) (storeclient.Digest, int64, error) {
	h := storeclient.NewHasher()
	var done int64
	for done < size {
		p := buf[:min(int64(len(buf)), size-done)]
		if pace != nil {
			if err := pace(len(p)); err != nil {
				return storeclient.Digest{}, done, &paceError{err}
			}
		}
		n, err := r.ReadAt(p, off+done)
		h.Write(p[:n])
		done += int64(n)
		if n == len(p) {
			continue
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return storeclient.Digest{}, done, err
	}
	return storeclient.Digest(h.Sum(nil)), done, nil
}

// paceError carries the error of hashRange's pace function, which is not
// about the copy being hashed.
type paceError struct{ err error }

func (e *paceError) Error() string { return e.err.Error() }
func (e *paceError) Unwrap() error { return e.err }

// checkBlobFile hashes the blob file at path, which should hold blob d.
// An error means it could not be checked: errCopyGone if the file does
// not exist, an open error, or pace's error.
func checkBlobFile(path string, d storeclient.Digest, buf []byte, pace func(int) error) (copyCheck, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return copyCheck{}, errCopyGone
	}
	if err != nil {
		return copyCheck{}, fmt.Errorf("check blob %s: %w", d, err)
	}
	defer f.Close()
	return checkFile(f, d, buf, pace)
}

// checkFile hashes the open blob file f, which should hold blob d.
func checkFile(f *os.File, d storeclient.Digest, buf []byte, pace func(int) error) (copyCheck, error) {
	fi, err := f.Stat()
	if err != nil {
		return copyCheck{}, fmt.Errorf("check blob %s: %w", d, err)
	}
	got, n, err := hashRange(f, 0, fi.Size(), buf, pace)
	var pe *paceError
	switch {
	case errors.As(err, &pe):
		return copyCheck{n: n}, pe.err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return copyCheck{n: n, fault: fmt.Sprintf("%s ends at %d of its %d bytes", f.Name(), n, fi.Size())}, nil
	case err != nil:
		return copyCheck{n: n, fault: fmt.Sprintf("read %s: %v", f.Name(), err), unreadable: true}, nil
	case got != d:
		return copyCheck{n: n, fault: fmt.Sprintf("content of %s (%d bytes) hashes to %s", f.Name(), n, got)}, nil
	}
	return copyCheck{n: n}, nil
}

// checkPacked hashes the packed blob d at loc. An error means it could
// not be checked: an error opening the pack other than its absence (which
// is a fault of the blob: its bytes are gone), or pace's error.
func (s *Store) checkPacked(d storeclient.Digest, loc packLoc, buf []byte, pace func(int) error) (copyCheck, error) {
	name := filepath.Join(packsDir, packName(loc.pack))
	pf, err := s.acquirePack(loc.pack)
	if errors.Is(err, os.ErrNotExist) {
		return copyCheck{fault: fmt.Sprintf("its pack %s does not exist", name)}, nil
	}
	if err != nil {
		return copyCheck{}, fmt.Errorf("check blob %s: %w", d, err)
	}
	defer s.releasePack(pf)
	got, n, err := hashRange(pf.f, loc.off, loc.size, buf, pace)
	var pe *paceError
	switch {
	case errors.As(err, &pe):
		return copyCheck{n: n}, pe.err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return copyCheck{n: n, fault: fmt.Sprintf("%s ends %d bytes into the blob's %d at %d", name, n, loc.size, loc.off)}, nil
	case err != nil:
		return copyCheck{n: n, fault: fmt.Sprintf("read %s at %d: %v", name, loc.off, err), unreadable: true}, nil
	case got != d:
		return copyCheck{n: n, fault: fmt.Sprintf("content of %s at %d (%d bytes) hashes to %s", name, loc.off, n, got)}, nil
	}
	return copyCheck{n: n}, nil
}

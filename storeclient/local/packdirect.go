package local

import (
	"errors"
	"fmt"
)

// Direct pack appends. On a store that syncs (not Options.NoSync) and is
// read later (not Options.CachedWrites), the small blobs of an import are
// not written to their pack one pwrite at a time through the page cache:
// PutSmallBlob copies each into an aligned 1 MiB stage of the current
// pack, and a full stage is written with O_DIRECT at its aligned offset,
// past the page cache, like the chunks of a big blob (see bigwriter.go for
// why). A blob is findable as soon as PutSmallBlob returns, so everything
// that reads pack bytes of uncommitted entries first makes sure they are
// in the file (packInFile): it waits for the stages being written and
// writes the bytes staged so far through the page cache. The commit of
// the entries does the same before its syncfs, so a committed entry
// always refers to bytes in the file, as without staging. A later direct
// write of the whole stage writes those bytes again (the kernel keeps the
// two coherent).

// packStage is the staged part of the current pack.
type packStage struct {
	buf  []byte // bytes from off on; len is how far it is filled, cap bigChunk
	off  int64  // file offset of buf[0], a multiple of directAlign
	done int    // bytes of buf already written through the page cache
}

// startStage gives af a stage whose bytes begin at the aligned offset at
// or below end: the pack's bytes from there to end are read back into it,
// so that the first direct write of the stage rewrites them unchanged.
// It returns false when the pack cannot be opened for direct writes; af
// then appends through the page cache.
func (s *Store) startStage(af *appendFile, end int64) bool {
	df, err := openDirect(af.f.Name())
	if err != nil {
		return false
	}
	st := &packStage{buf: s.directChunk(), off: end &^ (directAlign - 1)}
	if n := int(end - st.off); n > 0 {
		st.buf = st.buf[:n]
		if _, err := af.f.ReadAt(st.buf, st.off); err != nil {
			df.Close()
			s.directBufs.Put(&st.buf)
			return false
		}
		st.done = n // in the file already
	}
	af.stage, af.df = st, df
	return true
}

// stageLocked copies data, which goes at off, into af's stage, and
// returns the stages it filled, now taken out of af, for the caller to
// write with writeStages once it has let go of pw.mu. pw.mu is held.
func (s *Store) stageLocked(af *appendFile, off int64, data []byte) ([]*packStage, error) {
	st := af.stage
	if off != st.off+int64(len(st.buf)) {
		// Appends are staged in the order of their offsets, under pw.mu:
		// this is a bug, and the blob must not be recorded at off.
		return nil, fmt.Errorf("append to pack %s at %d, but its stage ends at %d", af.f.Name(), off, st.off+int64(len(st.buf)))
	}
	var full []*packStage
	for len(data) > 0 {
		n := copy(st.buf[len(st.buf):cap(st.buf)], data)
		st.buf = st.buf[:len(st.buf)+n]
		data = data[n:]
		if len(st.buf) == cap(st.buf) {
			full = append(full, st)
			next := &packStage{buf: s.directChunk(), off: st.off + int64(len(st.buf))}
			af.stage, st = next, next
			s.pw.inflight++
			af.writes++
		}
	}
	return full, nil
}

// writeStages writes full stages of af with O_DIRECT (through the page
// cache if the filesystem refuses), then accounts for them under pw.mu.
func (s *Store) writeStages(af *appendFile, full []*packStage) error {
	var first error
	for _, st := range full {
		err := writeStage(af, st)
		if err != nil && first == nil {
			first = fmt.Errorf("append to pack %s: %w", af.f.Name(), err)
		}
		s.directBufs.Put(&st.buf)
	}
	pw := s.pw
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if first != nil && pw.stageErr == nil {
		// The entries staged there are not in the file: the next commit
		// fails instead of referring to them.
		pw.stageErr = first
	}
	pw.inflight -= len(full)
	if pw.inflight == 0 {
		pw.idle.Broadcast()
	}
	for range full {
		af.writes--
	}
	if af.retired && af.writes == 0 {
		af.close()
	}
	return first
}

// writeStage writes st: all of it with O_DIRECT, or through the page
// cache the bytes not written yet.
func writeStage(af *appendFile, st *packStage) error {
	if !af.directRefused.Load() {
		_, err := af.df.WriteAt(st.buf, st.off)
		if err == nil || !errors.Is(err, errDirectRefused) {
			return err
		}
		// Not with this alignment or not on this filesystem: through
		// the page cache from now on.
		af.directRefused.Store(true)
	}
	_, err := af.f.WriteAt(st.buf[st.done:], st.off+int64(st.done))
	return err
}

// packInFileLocked makes sure that every blob appended so far is in its
// pack file: it waits for the stages being written and writes the current
// stage's new bytes through the page cache. pw.mu is held (and released
// while waiting).
func (s *Store) packInFileLocked() error {
	pw := s.pw
	if pw.inflight > 0 {
		pw.flushWaiting++
		for pw.inflight > 0 {
			pw.idle.Wait()
		}
		pw.flushWaiting--
		pw.idle.Broadcast() // the appends that waited for this
	}
	if pw.stageErr != nil {
		return pw.stageErr
	}
	af := pw.cur
	if af == nil || af.stage == nil {
		return nil
	}
	st := af.stage
	if st.done == len(st.buf) {
		return nil
	}
	if _, err := af.f.WriteAt(st.buf[st.done:], st.off+int64(st.done)); err != nil {
		err = fmt.Errorf("append to pack %s: %w", af.f.Name(), err)
		pw.stageErr = err
		return err
	}
	st.done = len(st.buf)
	return nil
}

// packInFile makes sure the bytes of the uncommitted entry at loc are in
// its pack file before a reader reads them.
func (s *Store) packInFile(loc packLoc) error {
	pw := s.pw
	if pw == nil || !pw.direct {
		return nil
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.inflight == 0 && (pw.cur == nil || pw.cur.stage == nil || loc.pack != pw.curID ||
		loc.off+loc.size <= pw.cur.stage.off+int64(pw.cur.stage.done)) {
		return pw.stageErr
	}
	return s.packInFileLocked()
}

// endStageLocked writes the rest of af's stage through the page cache and
// drops the stage, when af stops being the current pack. pw.mu is held.
func (s *Store) endStageLocked(af *appendFile) error {
	if af.stage == nil {
		return nil
	}
	st := af.stage
	var err error
	if st.done < len(st.buf) {
		if _, err = af.f.WriteAt(st.buf[st.done:], st.off+int64(st.done)); err != nil {
			err = fmt.Errorf("append to pack %s: %w", af.f.Name(), err)
			if s.pw.stageErr == nil {
				s.pw.stageErr = err
			}
		}
	}
	s.directBufs.Put(&st.buf)
	af.stage = nil
	return err
}

// close closes the descriptors of a retired pack.
func (af *appendFile) close() {
	af.f.Close()
	if af.df != nil {
		af.df.Close()
	}
}

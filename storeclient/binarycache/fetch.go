package binarycache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/nar"
)

// errUntrusted is wrapped (with ErrNotFound) by the error for a path that
// is refused because no trusted key signed it.
var errUntrusted = errors.New("not signed by a trusted key")

// fetched is a store path fetched and verified, whose blobs are in the
// cache store.
type fetched struct {
	info *storeclient.PathInfo
	// dirs are the Directories commit stores, leaves first.
	dirs []*storeclient.Directory
	// stored says that the cache store had the path already: there is
	// nothing to commit.
	stored bool
	// spilled says that the path had too many Directories to keep in
	// memory: the fetch stored them in the cache store as they came (dirs
	// is empty), so the commit, only the PathInfo, runs before the
	// lookup is answered.
	spilled bool
}

// fetch fetches the store path with digest d, verifies it and stores its
// blobs in the cache store; commit stores the rest.
func (s *Store) fetch(ctx context.Context, d storeclient.StorePathDigest) (*fetched, error) {
	// A fetch that finished just before this one was started has stored
	// the path already.
	if p, err := s.cache.GetPathInfo(ctx, d); err == nil || !errors.Is(err, storeclient.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		return &fetched{info: p, stored: true}, nil
	}
	start := time.Now()
	ni, err := s.narinfo(ctx, d)
	if err != nil {
		return nil, err
	}
	p := ni.Info
	if err := s.trust(p); err != nil {
		s.log.Warn("binary cache: refused untrusted path", "path", p.StorePath.String(), "cache", s.cfg.String(), "reason", err)
		return nil, fmt.Errorf("%s from %s: %w: %w", p.StorePath, s.cfg, errUntrusted, storeclient.ErrNotFound)
	}
	root, st, err := s.ingest(ctx, ni)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("binary cache: fetch failed", "path", p.StorePath.String(), "cache", s.cfg.String(), "err", err)
		}
		return nil, fmt.Errorf("fetch %s from %s: %w", p.StorePath, s.cfg, err)
	}
	p.Node = root
	s.log.Debug("binary cache: fetched", "path", p.StorePath.String(), "nar_size", p.NarSize,
		"file_size", ni.FileSize, "compression", ni.Compression, "directories", st.ndirs,
		"spilled", st.spilled, "duration", time.Since(start).Round(time.Millisecond))
	return &fetched{info: p, dirs: st.dirs, spilled: st.spilled}, nil
}

// commit makes a fetched path durable in the cache store: its Directories
// in one batch, then its PathInfo, last. The cache store syncs the blobs
// before it writes the first of them (local: one syncfs).
func (s *Store) commit(ctx context.Context, f *fetched) error {
	p, dirs := f.info, f.dirs
	start := time.Now()
	if err := putDirectories(ctx, s.cache, dirs); err != nil {
		return fmt.Errorf("store %s in the cache store: %w", p.StorePath, err)
	}
	if err := s.cache.PutPathInfo(ctx, p); err != nil {
		return fmt.Errorf("store %s in the cache store: pathinfo: %w", p.StorePath, err)
	}
	s.log.Debug("binary cache: committed", "path", p.StorePath.String(), "directories", len(dirs),
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// putDirectories stores dirs (leaves first) in one batch when store can.
func putDirectories(ctx context.Context, store storeclient.Store, dirs []*storeclient.Directory) error {
	if len(dirs) == 0 {
		return nil
	}
	if b, ok := store.(importer.DirectoryBatchPutter); ok {
		return b.PutDirectories(ctx, dirs)
	}
	for _, d := range dirs {
		if _, err := store.PutDirectory(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// narinfo fetches and checks <hash>.narinfo.
func (s *Store) narinfo(ctx context.Context, d storeclient.StorePathDigest) (*NarInfo, error) {
	name := d.String() + ".narinfo"
	r, err := s.t.get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("binary cache %s: %w", s.cfg, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxNarinfoSize+1))
	if err != nil {
		return nil, fmt.Errorf("binary cache %s: read %s: %w", s.cfg, name, err)
	}
	ni, err := ParseNarInfo(b, d)
	if err != nil {
		s.log.Error("binary cache: bad narinfo", "narinfo", name, "cache", s.cfg.String(), "err", err)
		return nil, fmt.Errorf("binary cache %s: %s: %w: %w", s.cfg, name, err, storeclient.ErrCorrupt)
	}
	return ni, nil
}

// trust decides whether p may be served: always when no keys are
// configured; otherwise as CheckTrust.
func (s *Store) trust(p *storeclient.PathInfo) error {
	if len(s.cfg.TrustedKeys) == 0 {
		return nil
	}
	return CheckTrust(p, s.cfg.TrustedKeys)
}

// CheckTrust returns nil if a key of keys made a valid signature of p, or
// if p is content-addressed with a content address that gives its store
// path and that storefs checks against the content (fixed:r:sha256,
// fixed:sha256, text:sha256; see VerifyContent), as Nix trusts CA paths
// without signatures. Otherwise it says why p is not trusted.
func CheckTrust(p *storeclient.PathInfo, keys []PublicKey) error {
	if VerifySignatures(p, keys) != "" {
		return nil
	}
	if p.CA != nil {
		err := checkCAPath(p)
		if err == nil {
			return nil
		}
		return fmt.Errorf("no valid signature by a trusted key, and its content address is unusable: %w", err)
	}
	if len(p.Signatures) == 0 {
		return errors.New("it has no signature")
	}
	return fmt.Errorf("none of its %d signatures is valid for a trusted key", len(p.Signatures))
}

// VerifyContent checks the content p.Node names in store against p's NAR
// size and hash, and against a flat or text content address: what a
// signature or content address vouches for.
func VerifyContent(ctx context.Context, store storeclient.Store, p *storeclient.PathInfo) error {
	size, sum, err := nar.Hash(ctx, store, p.Node)
	if err != nil {
		return fmt.Errorf("verify %s: %w", p.StorePath, err)
	}
	if size != p.NarSize || sum != p.NarSHA256 {
		return fmt.Errorf("verify %s: %w: the content does not match its NAR size and hash", p.StorePath, storeclient.ErrCorrupt)
	}
	if needsFlatHash(p.CA) {
		if err := checkFlatHash(ctx, store, p.Node, p.CA.Digest); err != nil {
			return fmt.Errorf("verify %s: %w", p.StorePath, err)
		}
	}
	return nil
}

// NarInfo fetches and checks the narinfo of the store path with digest d,
// without fetching the path and without checking its signatures (see
// CheckTrust). A path the cache does not have is an error wrapping
// storeclient.ErrNotFound.
func (s *Store) NarInfo(ctx context.Context, d storeclient.StorePathDigest) (*NarInfo, error) {
	return s.narinfo(ctx, d)
}

// ingest downloads the NAR of ni, verifying it as it streams, stores its
// blobs in the cache store, and returns the root node and the staging
// with the Directories, leaves first, which it does not store unless they
// are too many (see staging): nothing is made reachable here.
func (s *Store) ingest(ctx context.Context, ni *NarInfo) (storeclient.Node, *staging, error) {
	body, err := s.t.get(ctx, ni.URL)
	if err != nil {
		// The narinfo exists, so a missing NAR is a broken cache, not a
		// missing path.
		return storeclient.Node{}, nil, fmt.Errorf("NAR: %v", err)
	}
	closeBody := sync.OnceFunc(func() { body.Close() })
	defer closeBody()
	fileHash := newHashAhead(sha256.New())
	defer fileHash.stop()
	raw := &countingReader{r: body, h: fileHash, limit: ni.FileSize, what: "the file", onBytes: s.onBytes}
	if ni.FileSize == 0 {
		raw.limit = 0
	}
	// The decompressor buffers its reads of the download; a failure of
	// the download is returned as it is, not as corrupt data.
	dec, err := nar.Decompress(raw, nar.Compression(ni.Compression))
	if err != nil {
		return storeclient.Node{}, nil, err
	}
	// The download, its FileHash and the decompressor run in a goroutine
	// of their own, the NarHash, the NAR reader and the blob writes in
	// this one and the importer's.
	ahead := newReadAhead(dec)
	defer func() {
		ahead.stopFilling()
		closeBody() // ends a read of the download under way
		ahead.wait()
		dec.Close()
	}()
	narR := &countingReader{r: ahead, limit: ni.Info.NarSize, what: "the NAR"}
	st := stagingFor(s.cache, s.maxStagedEntries)
	info, err := importer.ImportPlainNAR(ctx, st.view(), narR, ni.Info.StorePath.Name)
	if err != nil {
		if errors.Is(err, nar.ErrMalformed) {
			err = fmt.Errorf("%w: %w", storeclient.ErrCorrupt, err)
		}
		return storeclient.Node{}, nil, err
	}
	// Anything after the NAR is an error, and the whole file counts for
	// FileSize and FileHash.
	if n, err := io.Copy(io.Discard, narR); err != nil {
		return storeclient.Node{}, nil, err
	} else if n > 0 {
		return storeclient.Node{}, nil, fmt.Errorf("%w: %d bytes after the end of the NAR", storeclient.ErrCorrupt, n)
	}
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return storeclient.Node{}, nil, err
	}
	if ni.FileSize != 0 && raw.n != ni.FileSize {
		return storeclient.Node{}, nil, fmt.Errorf("%w: %s has %d bytes, FileSize says %d", storeclient.ErrCorrupt, ni.URL, raw.n, ni.FileSize)
	}
	if ni.FileSHA256 != nil && [sha256.Size]byte(raw.h.Sum(nil)) != *ni.FileSHA256 {
		return storeclient.Node{}, nil, fmt.Errorf("%w: %s does not match its FileHash", storeclient.ErrCorrupt, ni.URL)
	}
	if narR.n != ni.Info.NarSize || info.NarSize != ni.Info.NarSize {
		return storeclient.Node{}, nil, fmt.Errorf("%w: the NAR has %d bytes, NarSize says %d", storeclient.ErrCorrupt, narR.n, ni.Info.NarSize)
	}
	if info.NarSHA256 != ni.Info.NarSHA256 {
		return storeclient.Node{}, nil, fmt.Errorf("%w: the NAR does not match its NarHash", storeclient.ErrCorrupt)
	}
	if needsFlatHash(ni.Info.CA) {
		if err := checkFlatHash(ctx, s.cache, info.Node, ni.Info.CA.Digest); err != nil {
			return storeclient.Node{}, nil, err
		}
	}
	return info.Node, st, nil
}

// checkFlatHash checks that root is a file whose contents have the sha256
// want (flat and text content addresses).
func checkFlatHash(ctx context.Context, store storeclient.Store, root storeclient.Node, want []byte) error {
	if root.Kind() != storeclient.KindFile {
		return fmt.Errorf("%w: a flat content address needs a single file, not a %s", storeclient.ErrCorrupt, root.Kind())
	}
	br, err := store.OpenBlob(ctx, root.Digest())
	if err != nil {
		return fmt.Errorf("check content address: %w", err)
	}
	defer br.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(br, 0, br.Size())); err != nil {
		return fmt.Errorf("check content address: %w", err)
	}
	if string(h.Sum(nil)) != string(want) {
		return fmt.Errorf("%w: the file does not match its content address", storeclient.ErrCorrupt)
	}
	return nil
}

// countingReader counts (and optionally hashes) what passes through it,
// and fails once more than limit bytes arrive (limit 0: no limit), so a
// hostile server cannot stream forever.
type countingReader struct {
	r       io.Reader
	h       hash.Hash
	n       uint64
	limit   uint64
	what    string
	onBytes func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	if c.h != nil {
		c.h.Write(p[:k])
	}
	c.n += uint64(k)
	if c.onBytes != nil && k > 0 {
		c.onBytes(int64(k))
	}
	if c.limit > 0 && c.n > c.limit {
		return k, fmt.Errorf("%w: %s is longer than the %d bytes its narinfo gives", storeclient.ErrCorrupt, c.what, c.limit)
	}
	return k, err
}

// staging is the cache store as the importer sees it: blobs go through;
// Directories and the PathInfo the importer computes (a content-addressed
// one, under another path) are only kept, so the fetch can check the
// PathInfo and store the Directories and the real PathInfo when the whole
// path has been verified, in one batch, with one sync of the blobs.
//
// Kept Directories cost memory in proportion to the path's entries (some
// 100-200 bytes each), outside the importer's budget; so past maxEntries
// entries the staging spills: it stores the Directories kept so far in the
// cache store, and then passes those that follow through in the
// importer's batches, as a plain import does. They are unreachable until
// the PathInfo is stored, so a fetch that then fails leaves only orphans,
// as with blobs.
type staging struct {
	storeclient.Store
	info *storeclient.PathInfo
	dirs []*storeclient.Directory

	maxEntries int
	entries    int  // entries of dirs
	ndirs      int  // Directories put, kept or spilled
	spilled    bool // dirs went to the cache store, as will the next
}

// stagingFor returns a staging of the cache store cache that keeps up to
// maxEntries Directory entries in memory.
func stagingFor(cache storeclient.Store, maxEntries int) *staging {
	return &staging{Store: cache, maxEntries: maxEntries}
}

// view returns s as the importer's store. When the cache store can store
// an already hashed blob in one call (the local store), so can the view:
// the importer then hashes each small file once and stores it without an
// existence check or a blob writer.
func (s *staging) view() storeclient.Store {
	if p, ok := s.Store.(importer.SmallBlobPutter); ok {
		return &smallBlobStaging{staging: s, small: p}
	}
	return s
}

// smallBlobStaging is a staging view of a cache store with PutSmallBlob.
type smallBlobStaging struct {
	*staging
	small importer.SmallBlobPutter
}

// PutSmallBlob implements importer.SmallBlobPutter by the cache store's.
func (s *smallBlobStaging) PutSmallBlob(ctx context.Context, d storeclient.Digest, data []byte) error {
	return s.small.PutSmallBlob(ctx, d, data)
}

// PutPathInfo keeps p instead of storing it.
func (s *staging) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	s.info = p
	return nil
}

// PutDirectory keeps d instead of storing it (see staging).
func (s *staging) PutDirectory(ctx context.Context, d *storeclient.Directory) (storeclient.Digest, error) {
	if err := s.PutDirectories(ctx, []*storeclient.Directory{d}); err != nil {
		return storeclient.Digest{}, err
	}
	return d.Digest(), nil
}

// PutDirectories keeps dirs instead of storing them, or, past maxEntries,
// stores them and those kept so far in the cache store (see staging).
func (s *staging) PutDirectories(ctx context.Context, dirs []*storeclient.Directory) error {
	s.ndirs += len(dirs)
	if s.spilled {
		return putDirectories(ctx, s.Store, dirs)
	}
	s.dirs = append(s.dirs, dirs...)
	for _, d := range dirs {
		s.entries += d.Len()
	}
	if s.entries <= s.maxEntries {
		return nil
	}
	s.spilled = true
	err := putDirectories(ctx, s.Store, s.dirs)
	s.dirs, s.entries = nil, 0
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/binarycache"
	"github.com/storefs/storefs/storeclient/storeurl"
)

// copyOptions are the flags of `storefs copy`.
type copyOptions struct {
	keys     string
	progress string
}

func newCopyCommand(g *globalOptions) *cobra.Command {
	o := &copyOptions{}
	cmd := &cobra.Command{
		Use:   "copy SOURCE_URL STORE_PATH...",
		Short: "Copy store paths and their closure from another store into --store",
		Long: `copy copies each STORE_PATH (/nix/store/<hash>-<name> or <hash>-<name>) and
every path it refers to, directly or not, from SOURCE_URL into the store
named by --store, references first, verifying as it goes.

SOURCE_URL is a Nix binary cache (nix+file:///DIR, nix+https://HOST, or the
plain file:// and http(s):// URLs Nix uses) or any storefs store URL
(local:DIR, grpc+http://HOST:PORT, ...). From a binary cache every NAR is
checked against its narinfo's FileHash/FileSize and NarHash/NarSize while it
streams into the store; from another store every blob and Directory is
checked against its digest and the path's NAR hash and size are recomputed.

With --trusted-public-keys (or trusted-public-keys= in a binary cache URL)
a path must be signed by one of the keys, or be content-addressed with a
content address that matches its store path and content (as Nix trusts
paths made by nix-store --add); otherwise copy fails.

A path already in --store is skipped, and so is its closure's copying if
complete: an interrupted copy resumes where it stopped, and a half-copied
path (no PathInfo yet) is copied again.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd.Context(), g, o, args[0], args[1:], cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&o.keys, "trusted-public-keys", "", "keys (NAME:BASE64, space-separated) that must have signed each path")
	cmd.Flags().StringVar(&o.progress, "progress", "auto", "progress display: auto (a live line on a terminal, else one line per path), plain, none")
	return cmd
}

// copySource is where copy reads paths from.
type copySource interface {
	// info returns the PathInfo of d without copying anything, or an
	// error wrapping storeclient.ErrNotFound.
	info(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error)
	// copy copies p into the destination, PathInfo last.
	copy(ctx context.Context, p *storeclient.PathInfo) error
	close() error
}

func runCopy(ctx context.Context, g *globalOptions, o *copyOptions, srcURL string, args []string, stderr io.Writer) error {
	var keys []binarycache.PublicKey
	if strings.TrimSpace(o.keys) != "" {
		k, err := binarycache.ParsePublicKeys(o.keys)
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		keys = k
	}
	var want []storeclient.StorePath
	for _, a := range args {
		sp, err := storeclient.ParseStorePathBasename(storeRelative(a))
		if err != nil {
			return fmt.Errorf("copy: %s is not a store path: %w", a, err)
		}
		want = append(want, sp)
	}
	pr, err := newCopyProgress(o.progress, stderr)
	if err != nil {
		return err
	}
	dst, err := g.openStore(ctx, false)
	if err != nil {
		return err
	}
	defer dst.Close()
	src, err := openCopySource(ctx, srcURL, dst, keys, pr)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer src.close()

	order, err := copyClosure(ctx, src, dst, want)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	pr.start(ctx, len(order))
	defer pr.stop()
	for _, p := range order {
		if _, err := dst.GetPathInfo(ctx, p.StorePath.Digest); err == nil {
			pr.present(p)
			continue
		} else if !errors.Is(err, storeclient.ErrNotFound) {
			return fmt.Errorf("copy: %s: %w", p.StorePath, err)
		}
		t0 := time.Now()
		if err := src.copy(ctx, p); err != nil {
			return fmt.Errorf("copy: %s: %w", p.StorePath, err)
		}
		pr.copied(p, time.Since(t0))
	}
	pr.finish()
	return nil
}

// isBinaryCacheURL reports whether u names a Nix binary cache.
func isBinaryCacheURL(u string) bool {
	for _, p := range []string{"nix+file://", "nix+http://", "nix+https://", "file://", "http://", "https://"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func openCopySource(ctx context.Context, u string, dst storeclient.Store, keys []binarycache.PublicKey, pr *copyProgress) (copySource, error) {
	if isBinaryCacheURL(u) {
		cfg, err := binarycache.ParseURL(u)
		if err != nil {
			return nil, err
		}
		if cfg.CacheURL != binarycache.DefaultCacheURL {
			return nil, fmt.Errorf("source %s: cache= has no meaning for copy (paths go into --store)", cfg)
		}
		cfg.TrustedKeys = append(cfg.TrustedKeys, keys...)
		// The destination is the binary cache store's cache: a fetch
		// verifies the NAR while it streams into --store and stores the
		// PathInfo last.
		cfg.NegativeTTL = 0
		bc, err := binarycache.New(ctx, cfg, binarycache.Options{Cache: dst, OnBytes: pr.addBytes})
		if err != nil {
			return nil, err
		}
		return &cacheSource{bc: bc}, nil
	}
	s, err := storeurl.Open(ctx, u, storeurl.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	return &storeSource{src: s, dst: dst, keys: keys, pr: pr}, nil
}

// copyClosure returns the closure of want, references before the paths
// that refer to them. PathInfos come from the destination when it has the
// path, else from the source.
func copyClosure(ctx context.Context, src copySource, dst storeclient.Store, want []storeclient.StorePath) ([]*storeclient.PathInfo, error) {
	infos := map[storeclient.StorePathDigest]*storeclient.PathInfo{}
	queue := append([]storeclient.StorePath(nil), want...)
	for len(queue) > 0 {
		sp := queue[0]
		queue = queue[1:]
		if _, ok := infos[sp.Digest]; ok {
			continue
		}
		p, err := dst.GetPathInfo(ctx, sp.Digest)
		if errors.Is(err, storeclient.ErrNotFound) {
			p, err = src.info(ctx, sp.Digest)
		}
		if errors.Is(err, storeclient.ErrNotFound) {
			return nil, fmt.Errorf("%s is not in the source", sp)
		}
		if err != nil {
			return nil, err
		}
		if p.StorePath != sp {
			return nil, fmt.Errorf("asked for %s, the source has %s", sp, p.StorePath)
		}
		infos[sp.Digest] = p
		queue = append(queue, p.References...)
	}
	// Depth-first post-order: every path after its references.
	var order []*storeclient.PathInfo
	state := map[storeclient.StorePathDigest]int{} // 1 visiting, 2 done
	var visit func(p *storeclient.PathInfo)
	visit = func(p *storeclient.PathInfo) {
		if state[p.StorePath.Digest] != 0 {
			return // done, or a cycle (only self-references are legal)
		}
		state[p.StorePath.Digest] = 1
		for _, r := range p.References {
			visit(infos[r.Digest])
		}
		state[p.StorePath.Digest] = 2
		order = append(order, p)
	}
	for _, sp := range want {
		visit(infos[sp.Digest])
	}
	return order, nil
}

// cacheSource copies from a Nix binary cache: the binarycache.Store's
// cache store is the destination, so a lookup is a verified copy.
type cacheSource struct {
	bc *binarycache.Store
}

func (c *cacheSource) info(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	ni, err := c.bc.NarInfo(ctx, d)
	if err != nil {
		return nil, err
	}
	return ni.Info, nil
}

func (c *cacheSource) copy(ctx context.Context, p *storeclient.PathInfo) error {
	_, err := c.bc.GetPathInfo(ctx, p.StorePath.Digest)
	if errors.Is(err, storeclient.ErrNotFound) {
		return fmt.Errorf("refused or gone from the cache: %w", err)
	}
	return err
}

func (c *cacheSource) close() error { return c.bc.Close() }

// storeSource copies from another storefs store (local, gRPC, ...).
type storeSource struct {
	src, dst storeclient.Store
	keys     []binarycache.PublicKey
	pr       *copyProgress
}

func (s *storeSource) info(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	return s.src.GetPathInfo(ctx, d)
}

func (s *storeSource) copy(ctx context.Context, p *storeclient.PathInfo) error {
	if len(s.keys) > 0 {
		if err := binarycache.CheckTrust(p, s.keys); err != nil {
			return fmt.Errorf("not trusted: %w", err)
		}
	}
	seen := map[storeclient.Digest]bool{}
	if err := s.node(ctx, p.Node, seen); err != nil {
		return err
	}
	if err := binarycache.VerifyContent(ctx, s.dst, p); err != nil {
		return err
	}
	return s.dst.PutPathInfo(ctx, p)
}

func (s *storeSource) close() error { return s.src.Close() }

// node copies the content of n, Directories leaves first.
func (s *storeSource) node(ctx context.Context, n storeclient.Node, seen map[storeclient.Digest]bool) error {
	switch n.Kind() {
	case storeclient.KindFile:
		return s.blob(ctx, n)
	case storeclient.KindDirectory:
		d := n.Digest()
		if seen[d] {
			return nil
		}
		dir, err := s.src.GetDirectory(ctx, d)
		if err != nil {
			return fmt.Errorf("directory %s: %w", d, err)
		}
		if got := dir.Digest(); got != d {
			return fmt.Errorf("directory %s: %w: the source sent one hashing to %s", d, storeclient.ErrCorrupt, got)
		}
		for _, e := range dir.Entries() {
			if err := s.node(ctx, e.Node, seen); err != nil {
				return err
			}
		}
		if _, err := s.dst.PutDirectory(ctx, dir); err != nil {
			return fmt.Errorf("directory %s: %w", d, err)
		}
		seen[d] = true
	}
	return nil
}

// blob copies a file's blob unless the destination has it, checking its
// digest.
func (s *storeSource) blob(ctx context.Context, n storeclient.Node) error {
	d := n.Digest()
	if size, err := s.dst.StatBlob(ctx, d); err == nil && uint64(size) == n.Size() {
		return nil
	}
	r, err := s.src.OpenBlob(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer r.Close()
	w, err := s.dst.NewBlobWriter(ctx)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer w.Close()
	n64, err := io.Copy(w, &progressReader{r: io.NewSectionReader(r, 0, r.Size()), pr: s.pr})
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	got, err := w.Commit()
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if got != d || uint64(n64) != n.Size() {
		return fmt.Errorf("blob %s: %w: the source sent %d bytes hashing to %s", d, storeclient.ErrCorrupt, n64, got)
	}
	return nil
}

type progressReader struct {
	r  io.Reader
	pr *copyProgress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pr.addBytes(int64(n))
	return n, err
}

// copyProgress reports progress on stderr: on a terminal one line
// rewritten in place (paths, bytes, rate), otherwise one line per path.
type copyProgress struct {
	w         io.Writer
	live      bool
	quiet     bool
	bytes     atomic.Int64
	begin     time.Time
	total     int
	done      atomic.Int64
	skipped   atomic.Int64
	mu        sync.Mutex // serialises writes to w
	stopTick  context.CancelFunc
	tickerRan sync.WaitGroup
}

func newCopyProgress(mode string, w io.Writer) (*copyProgress, error) {
	pr := &copyProgress{w: w}
	switch mode {
	case "auto":
		pr.live = isTerminal(w)
	case "plain":
	case "none":
		pr.quiet = true
	default:
		return nil, fmt.Errorf("copy: --progress must be auto, plain or none, not %q", mode)
	}
	return pr, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (pr *copyProgress) addBytes(n int64) { pr.bytes.Add(n) }

// start begins the run; on a terminal a ticker redraws the line until
// stop.
func (pr *copyProgress) start(ctx context.Context, total int) {
	pr.begin, pr.total = time.Now(), total
	if !pr.live || pr.quiet {
		return
	}
	ctx, pr.stopTick = context.WithCancel(ctx)
	pr.tickerRan.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pr.redraw()
			}
		}
	})
}

// stop ends the ticker and clears the live line.
func (pr *copyProgress) stop() {
	if pr.stopTick == nil {
		return
	}
	pr.stopTick()
	pr.tickerRan.Wait()
	pr.stopTick = nil
	pr.mu.Lock()
	fmt.Fprint(pr.w, "\r\033[K")
	pr.mu.Unlock()
}

func (pr *copyProgress) status() string {
	secs := max(time.Since(pr.begin).Seconds(), 1e-3)
	b := pr.bytes.Load()
	return fmt.Sprintf("%d/%d paths (%d already present), %s, %s/s",
		pr.done.Load(), pr.total, pr.skipped.Load(), formatBytes(b), formatBytes(int64(float64(b)/secs)))
}

func (pr *copyProgress) redraw() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	fmt.Fprintf(pr.w, "\r\033[Kcopying: %s", pr.status())
}

func (pr *copyProgress) line(format string, args ...any) {
	if pr.quiet {
		return
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.live {
		fmt.Fprint(pr.w, "\r\033[K")
	}
	fmt.Fprintf(pr.w, format+"\n", args...)
}

func (pr *copyProgress) present(p *storeclient.PathInfo) {
	pr.done.Add(1)
	pr.skipped.Add(1)
	if !pr.live {
		pr.line("present %s", p.StorePath)
	}
}

func (pr *copyProgress) copied(p *storeclient.PathInfo, took time.Duration) {
	pr.done.Add(1)
	pr.line("copied  %s (%s NAR, %s)", p.StorePath, formatBytes(int64(p.NarSize)), took.Round(time.Millisecond))
}

func (pr *copyProgress) finish() {
	pr.stop()
	pr.line("done: %s in %s", pr.status(), time.Since(pr.begin).Round(time.Millisecond))
}

package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Environment variables that change where and what the harness fetches.
const (
	// EnvCacheDir overrides the cache directory (see CacheDir).
	EnvCacheDir = "STOREFS_VM_CACHE"
	// EnvKernel names the guest kernel release to use, e.g.
	// "6.1.0-56-amd64", instead of the one linux-image-amd64 depends on.
	EnvKernel = "STOREFS_VM_KERNEL"
	// EnvKVM set to "1" runs guests with KVM instead of emulating them
	// (TCG), for hosts where /dev/kvm works.
	EnvKVM = "STOREFS_VM_KVM"
)

// Kernel is a Debian guest kernel extracted with dpkg -x into the cache,
// with modules.dep built by depmod.
type Kernel struct {
	// Release is the kernel release (uname -r), e.g. "6.1.0-56-amd64".
	Release string
	// Root is the extraction root: it holds boot/ and lib/modules/Release/.
	Root string
	// Image is the path of the bootable kernel image (vmlinuz).
	Image string
}

// CacheDir returns the directory in which guest kernels are kept across
// runs: $STOREFS_VM_CACHE if set, else $XDG_CACHE_HOME/storefs-e2e, else
// /var/tmp/storefs-e2e. /var/tmp rather than ~/.cache because tests often
// run with a throwaway HOME, and rather than /tmp because it survives
// reboots.
func CacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "storefs-e2e")
	}
	return "/var/tmp/storefs-e2e"
}

// kernelRelease matches the dependency of linux-image-amd64 on a concrete
// kernel package.
var kernelRelease = regexp.MustCompile(`^linux-image-([0-9][A-Za-z0-9.+~-]*-amd64)$`)

// FetchTimeout bounds FindHost's wait for the cache lock, the download and
// the extraction together.
const FetchTimeout = 10 * time.Minute

// FetchKernel returns the guest kernel, downloading and extracting it into
// cacheDir/kernel/RELEASE on first use. The release is $STOREFS_VM_KERNEL,
// or the one Debian's linux-image-amd64 currently depends on. Concurrent
// callers, in this process or others, are serialised by a lock file in
// cacheDir; a kernel already in the cache is used without taking the lock.
// logf, if not nil, receives one line per slow step.
func FetchKernel(ctx context.Context, cacheDir string, logf func(format string, args ...any)) (*Kernel, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	kdir := filepath.Join(cacheDir, "kernel")
	release := os.Getenv(EnvKernel)
	if release == "" {
		r, err := resolveRelease(ctx, logf)
		if err != nil {
			// Offline, or no apt: a kernel fetched earlier still serves.
			if k, cerr := newestCached(kdir); cerr == nil {
				logf("vm: %v; using cached kernel %s", err, k.Release)
				return k, nil
			}
			return nil, err
		}
		release = r
	}
	if k, err := cachedKernel(kdir, release); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("vm: kernel cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have fetched it while we waited for the lock.
	if k, err := cachedKernel(kdir, release); err == nil {
		return k, nil
	}
	if err := fetchKernel(ctx, kdir, release, logf); err != nil {
		return nil, err
	}
	pruneKernels(kdir, release, logf)
	return cachedKernel(kdir, release)
}

// pruneKernels removes the kernels in kdir other than keep (about 400 MB
// each): Debian moved on from them. The caller holds the cache lock.
func pruneKernels(kdir, keep string, logf func(string, ...any)) {
	ents, err := os.ReadDir(kdir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != keep && !strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(kdir, e.Name())); err != nil {
				logf("vm: removing old kernel %s: %v", e.Name(), err)
			}
		}
	}
}

// cachedKernel returns the kernel in kdir/release if it is complete.
// Completeness is the directory's existence: it is renamed into place only
// after depmod succeeded.
func cachedKernel(kdir, release string) (*Kernel, error) {
	k := &Kernel{
		Release: release,
		Root:    filepath.Join(kdir, release),
		Image:   filepath.Join(kdir, release, "boot", "vmlinuz-"+release),
	}
	if _, err := os.Stat(k.Image); err != nil {
		return nil, fmt.Errorf("vm: kernel %s not cached: %w", release, err)
	}
	if _, err := os.Stat(filepath.Join(k.Root, "lib", "modules", release, "modules.dep")); err != nil {
		return nil, fmt.Errorf("vm: kernel %s not cached: %w", release, err)
	}
	return k, nil
}

// newestCached returns the complete kernel in kdir with the newest
// modification time (dpkg -x gives the root the package's).
func newestCached(kdir string) (*Kernel, error) {
	ents, err := os.ReadDir(kdir)
	if err != nil {
		return nil, fmt.Errorf("vm: kernel cache: %w", err)
	}
	var best *Kernel
	var bestTime time.Time
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		k, err := cachedKernel(kdir, e.Name())
		if err != nil {
			continue
		}
		fi, err := os.Stat(k.Root)
		if err != nil {
			continue
		}
		if best == nil || fi.ModTime().After(bestTime) {
			best, bestTime = k, fi.ModTime()
		}
	}
	if best == nil {
		return nil, fmt.Errorf("vm: no complete kernel in %s", kdir)
	}
	return best, nil
}

// resolveRelease asks apt which kernel linux-image-amd64 depends on,
// running apt-get update once if the package lists do not know it.
func resolveRelease(ctx context.Context, logf func(string, ...any)) (string, error) {
	r, err := aptDepends(ctx)
	if err == nil {
		return r, nil
	}
	logf("vm: %v; running apt-get update", err)
	if uerr := aptUpdate(ctx); uerr != nil {
		return "", fmt.Errorf("%w (and %w)", err, uerr)
	}
	return aptDepends(ctx)
}

func aptDepends(ctx context.Context) (string, error) {
	out, err := run(ctx, "", "apt-cache", "depends", "linux-image-amd64")
	if err != nil {
		return "", fmt.Errorf("vm: resolving the guest kernel: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.TrimLeft(f[0], "|") == "Depends:" {
			if m := kernelRelease.FindStringSubmatch(f[1]); m != nil {
				return m[1], nil
			}
		}
	}
	return "", fmt.Errorf("vm: resolving the guest kernel: apt-cache depends linux-image-amd64 names no linux-image-*-amd64:\n%s", out)
}

func aptUpdate(ctx context.Context) error {
	if _, err := run(ctx, "", "apt-get", "update"); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}

// fetchKernel downloads linux-image-RELEASE, extracts it and runs depmod in
// a temporary directory that is renamed to kdir/release at the end. The
// caller holds the cache lock.
func fetchKernel(ctx context.Context, kdir, release string, logf func(string, ...any)) error {
	tmp, err := os.MkdirTemp(kdir, ".fetch-"+release+"-")
	if err != nil {
		return fmt.Errorf("vm: kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt-get download runs as the _apt user when it can; let it write here.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return fmt.Errorf("vm: kernel cache: %w", err)
	}
	pkg := "linux-image-" + release
	start := time.Now()
	if _, err := run(ctx, tmp, "apt-get", "download", pkg); err != nil {
		logf("vm: %v; running apt-get update and retrying", err)
		if uerr := aptUpdate(ctx); uerr != nil {
			return fmt.Errorf("vm: downloading %s: %w (and %w)", pkg, err, uerr)
		}
		if _, err := run(ctx, tmp, "apt-get", "download", pkg); err != nil {
			return fmt.Errorf("vm: downloading %s: %w", pkg, err)
		}
	}
	debs, err := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if err != nil || len(debs) != 1 {
		return fmt.Errorf("vm: apt-get download %s left %d .deb files in %s", pkg, len(debs), tmp)
	}
	logf("vm: downloaded %s in %v", filepath.Base(debs[0]), time.Since(start).Round(time.Millisecond))
	root := filepath.Join(tmp, "root")
	start = time.Now()
	if _, err := run(ctx, "", "dpkg", "-x", debs[0], root); err != nil {
		return fmt.Errorf("vm: extracting %s: %w", pkg, err)
	}
	if err := os.Remove(debs[0]); err != nil {
		return fmt.Errorf("vm: kernel cache: %w", err)
	}
	if _, err := run(ctx, "", "depmod", "-b", root, release); err != nil {
		return fmt.Errorf("vm: depmod for %s: %w", pkg, err)
	}
	logf("vm: extracted %s and ran depmod in %v", pkg, time.Since(start).Round(time.Millisecond))
	if err := os.Chmod(root, 0o755); err != nil {
		return fmt.Errorf("vm: kernel cache: %w", err)
	}
	if err := os.Rename(root, filepath.Join(kdir, release)); err != nil {
		return fmt.Errorf("vm: kernel cache: %w", err)
	}
	return nil
}

// lockFile takes an exclusive flock on path, polling until ctx is done so
// that a stuck holder cannot block the caller forever. The returned
// function releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("vm: lock: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vm: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("vm: waiting for lock %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// run runs a program in dir and returns its standard output; the error
// carries the command line and the tail of its standard error.
func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(stderr.String(), 1000))
	}
	return out, nil
}

// tail returns at most the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

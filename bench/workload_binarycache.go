package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// binaryCacheWorkload reads a ~100 MB store path from a file:// zstd Nix
// binary cache: the first read through a nix+file store (fetch, verify,
// ingest into a local cache store, read every byte) and `storefs copy`
// against `nix copy --from file://… --to local?root=…` of the same path;
// then the second read, from the local cache store, against reading the
// same tree from a local store it was imported into.
func binaryCacheWorkload() Workload {
	return Workload{
		Name: "binarycache",
		Doc:  "first and second read of a ~100 MB path from a file:// zstd binary cache vs nix copy",
		Run:  runBinaryCacheWorkload,
	}
}

// binaryCacheTreeSize is the size of the store path the workload reads.
func binaryCacheTreeSize(env *Env) int64 {
	if env.Smoke {
		return 8 << 20
	}
	return 100 << 20
}

// writeTextTree writes a deterministic, compressible (text-like) tree of
// about size bytes: one big file of 60% and small files of 4-40 KiB.
func writeTextTree(dir string, size int64) (files int, total int64, err error) {
	words := strings.Fields("the store path of a derivation output is content addressed or input addressed " +
		"nix builds packages in isolation and copies closures between machines through binary caches " +
		"lib bin share include usr etc opt static dynamic link library symbol version module")
	rng := rand.New(rand.NewPCG(7, 0xb1c))
	write := func(path string, n int64) error {
		var b bytes.Buffer
		for int64(b.Len()) < n {
			b.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		files++
		total += n
		return os.WriteFile(path, b.Bytes()[:n], 0o644)
	}
	if err := write(filepath.Join(dir, "lib", "big.so"), size*6/10); err != nil {
		return 0, 0, err
	}
	for i := 0; total < size; i++ {
		n := int64(4<<10 + rng.IntN(36<<10))
		if err := write(filepath.Join(dir, "share", fmt.Sprintf("d%02d", i/100), fmt.Sprintf("f%04d.txt", i)), n); err != nil {
			return 0, 0, err
		}
	}
	return files, total, nil
}

// runNix runs a Nix command and returns its trimmed standard output.
func runNix(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = nixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// readAllVFS reads every file below the store path p (a basename) through
// fsys and returns the bytes read.
func readAllVFS(ctx context.Context, fsys *vfs.FS, p string) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	var walk func(n vfs.Node) error
	walk = func(n vfs.Node) error {
		if n.IsDir() {
			var cookie uint64
			for {
				es, err := fsys.ReadDir(ctx, n, cookie, 1024)
				if err != nil || len(es) == 0 {
					return err
				}
				for _, e := range es {
					if err := walk(e.Node); err != nil {
						return err
					}
				}
				cookie = es[len(es)-1].Cookie
			}
		}
		if !fsys.Attr(n).Mode.IsRegular() {
			return nil
		}
		f, err := fsys.Open(ctx, n)
		if err != nil {
			return err
		}
		defer f.Close()
		for off := int64(0); ; {
			k, err := f.ReadAt(buf, off)
			off += int64(k)
			total += int64(k)
			if errors.Is(err, io.EOF) || (err == nil && off >= f.Size()) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	n, err := fsys.Walk(ctx, p, false)
	if err != nil {
		return 0, err
	}
	return total, walk(n)
}

// readStoreURL opens the store at u, reads path p through vfs, and closes
// the store.
func readStoreURL(ctx context.Context, u, p string) (int64, error) {
	n, _, err := readStoreURLTimed(ctx, u, p)
	return n, err
}

// readStoreURLTimed is readStoreURL that also returns how long it took to
// read the last byte: the time a reader of a mounted store waits. Closing
// the store afterwards (a nix+ store waits there for its background
// commit of the fetched path to the cache store) is not part of it.
func readStoreURLTimed(ctx context.Context, u, p string) (int64, time.Duration, error) {
	t0 := time.Now()
	s, err := storeurl.Open(ctx, u, storeurl.Options{})
	if err != nil {
		return 0, 0, err
	}
	fsys, err := vfs.New(s, vfs.Options{Timeout: 10 * time.Minute})
	if err != nil {
		s.Close()
		return 0, 0, err
	}
	n, err := readAllVFS(ctx, fsys, p)
	read := time.Since(t0)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return n, read, err
}

// firstReadContender is a contender of the first-read comparison; run
// returns, besides an error, the time to its result when that is before
// its end (the vfs read: last byte read, then the store closed), else 0.
type firstReadContender struct {
	name, doneName string // doneName: the row for the time to the end, if run returns a result time
	peer           bool
	run            func(ctx context.Context, dir string) (time.Duration, error)
}

// runFirstReads runs the contenders as runContenders does (interleaved
// rounds, a sync before each run, a fresh directory each) and returns each
// one's times to its result and times to its end.
func runFirstReads(ctx context.Context, env *Env, cs []firstReadContender) (result, end []rounds, err error) {
	result = make([]rounds, len(cs))
	end = make([]rounds, len(cs))
	for i := 0; i < env.Runs; i++ {
		for j, c := range cs {
			dir := filepath.Join(env.Scratch, fmt.Sprintf("first%d-sys%d", i, j))
			syscall.Sync()
			t0 := time.Now()
			r, err := c.run(ctx, dir)
			d := time.Since(t0)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", c.name, err)
			}
			if r == 0 {
				r = d
			}
			env.Log.Debug("run", "system", c.name, "round", i, "result", r, "wall", d)
			result[j] = append(result[j], r)
			end[j] = append(end[j], d)
		}
	}
	return result, end, nil
}

func runBinaryCacheWorkload(ctx context.Context, env *Env) ([]Result, error) {
	if why := nixAvailable(); why != "" {
		return []Result{{Workload: "binarycache", System: "nix copy", Peer: true, Skipped: why}}, nil
	}
	w := filepath.Join(env.Scratch, "binarycache")
	tree := filepath.Join(w, "bc-tree")
	files, size, err := writeTextTree(tree, binaryCacheTreeSize(env))
	if err != nil {
		return nil, err
	}
	srcRoot := filepath.Join(w, "nixsrc")
	storePath, err := runNix(ctx, "nix-store", "--store", "local?root="+srcRoot, "--add", tree)
	if err != nil {
		return nil, err
	}
	sk, pk := filepath.Join(w, "sk"), filepath.Join(w, "pk")
	if _, err := runNix(ctx, "nix-store", "--generate-binary-cache-key", "storefs-bench-1", sk, pk); err != nil {
		return nil, err
	}
	keyB, err := os.ReadFile(pk)
	if err != nil {
		return nil, err
	}
	key := strings.TrimSpace(string(keyB))
	cache := filepath.Join(w, "cache")
	if _, err := runNix(ctx, "nix", "copy", "--from", "local?root="+srcRoot, "--to",
		"file://"+cache+"?compression=zstd&secret-key="+sk, storePath); err != nil {
		return nil, err
	}
	base := filepath.Base(storePath)
	cacheURL := func(dir string) string {
		return "nix+file://" + cache + "?trusted-public-keys=" + key + "&cache=local:" + dir
	}
	check := func(n int64, err error) (string, error) {
		if err == nil && n != size {
			err = fmt.Errorf("read %d bytes, the tree has %d", n, size)
		}
		return "", err
	}

	// The source is the same warm cache directory for every run (nix copy
	// wrote it just before); each run writes a fresh store after a sync.
	// nix copy is a new process, as it is for a user; the vfs read runs in
	// this process, as it does in a mounted storefs daemon.
	first := []firstReadContender{
		{name: "nix copy --from file:// --to local?root=", peer: true, run: func(ctx context.Context, dir string) (time.Duration, error) {
			_, err := runNix(ctx, "nix", "copy", "--from", "file://"+cache, "--to", "local?root="+dir,
				"--option", "trusted-public-keys", key, storePath)
			return 0, err
		}},
		{name: "storefs first read via vfs (nix+file, cache=local:), last byte read",
			doneName: "storefs first read via vfs (nix+file, cache=local:), store closed (path durable)",
			run: func(ctx context.Context, dir string) (time.Duration, error) {
				n, read, err := readStoreURLTimed(ctx, cacheURL(dir), base)
				_, err = check(n, err)
				return read, err
			}},
		{name: "storefs copy file:// into local:", run: func(ctx context.Context, dir string) (time.Duration, error) {
			cmd := exec.CommandContext(ctx, env.Storefs, "--store", "local:"+dir, "copy", "--progress", "none",
				"--trusted-public-keys", key, "file://"+cache, storePath)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return 0, fmt.Errorf("%w: %s", err, out)
			}
			return 0, nil
		}},
	}
	res, ends, err := runFirstReads(ctx, env, first)
	if err != nil {
		return nil, err
	}
	var results []Result
	for i, c := range first {
		results = append(results, res[i].result("binarycache first", c.name, c.peer, size, files))
		if c.doneName != "" {
			results = append(results, ends[i].result("binarycache first", c.doneName, false, size, files))
		}
	}

	// Second read: the cache store is filled once, untimed.
	filled := filepath.Join(w, "filled")
	if _, err := check(readStoreURL(ctx, cacheURL(filled), base)); err != nil {
		return nil, err
	}
	imported := filepath.Join(w, "imported")
	if _, err := storefsImport(ctx, env, imported, tree); err != nil {
		return nil, err
	}
	second := []contender{
		{name: "storefs read via vfs, local store (storefs import)", peer: true, run: func(ctx context.Context, _ string) (string, error) {
			return check(readStoreURL(ctx, "local:"+imported, base))
		}},
		{name: "storefs second read via vfs (nix+file, cached)", run: func(ctx context.Context, _ string) (string, error) {
			return check(readStoreURL(ctx, cacheURL(filled), base))
		}},
	}
	walls, _, err := runContenders(ctx, env, second)
	if err != nil {
		return nil, err
	}
	for i, c := range second {
		results = append(results, walls[i].result("binarycache second", c.name, c.peer, size, files))
	}
	return results, nil
}

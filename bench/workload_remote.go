package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/local"
)

// remoteWorkload reads a remote store through `storefs mount` of
// grpc+http://…, the remote being `storefs serve` of a local store holding
// the corpus's big file and a set of reader files, on loopback:
//
//   - first 4 KiB: open() to the 4 KiB read, at offset 0 and at a seeded
//     random offset of the big file, each on a fresh mount, against a fresh
//     FUSE mount of the same local store;
//   - seq read: the big file through a fresh mount, against the same blob
//     streamed raw (BlobService.Read, no verification) by a gRPC client in
//     this process from the same server;
//   - random reads: seeded, distinct, page-aligned 4 KiB preads of the big
//     file on a fresh mount, against the local-store mount;
//   - concurrent readers: one reader per file, all at once, on a fresh
//     mount; the table notes the mounting daemon's peak RSS (VmHWM).
//
// The bytes the server sent (storefs_grpc_blob_sent_bytes_total, "n/a"
// when the server does not export it) show whether each byte crosses the
// network once. Every byte read is checked against the corpus.
func remoteWorkload() Workload {
	return Workload{
		Name: "remote",
		Doc:  "storefs mount of a grpc+http store (storefs serve on loopback): first 4 KiB, seq read vs raw gRPC, random 4 KiB reads vs a local-store mount, RSS under concurrent readers",
		Run:  runRemoteWorkload,
	}
}

// documentedRemoteRSSBound is the peak RSS documented for a daemon mounting
// a remote store while the concurrent readers read; the table names it
// next to the measured peak.
const documentedRemoteRSSBound = 512 << 20

const (
	// firstReadTarget is the longest open() to first 4 KiB allowed.
	firstReadTarget = 50 * time.Millisecond
	// seqThroughputTarget is the least mount throughput allowed, as a
	// fraction of the raw stream's.
	seqThroughputTarget = 0.8
	// sentBytesMetric counts the blob bytes the gRPC server sent.
	sentBytesMetric = "storefs_grpc_blob_sent_bytes_total"
	// remoteTimeout bounds each mount's life and each raw stream, so that
	// a hung daemon fails the run instead of hanging it.
	remoteTimeout = 10 * time.Minute
	pageSize      = 4096
	readBufSize   = 1 << 20 // as dd bs=1M in the FUSE workload
)

// castagnoli checks whole files: it runs at memory speed, so it costs the
// timed reads next to nothing and both sides of a comparison alike, where
// SHA-256 would slow them by a large, unequal fraction.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// remoteSizes are the workload's sizes; the big blob is the corpus's big file.
type remoteSizes struct {
	randReads  int
	readers    int
	readerSize int64
}

func remoteSizesFor(smoke bool) remoteSizes {
	if smoke {
		return remoteSizes{randReads: 200, readers: 8, readerSize: 4 << 20}
	}
	return remoteSizes{randReads: 2000, readers: 64, readerSize: 16 << 20}
}

// remoteBench holds what the measurements share.
type remoteBench struct {
	env       *Env
	big       string // the corpus's big file
	size      int64
	bigCRC    uint32
	digest    storeclient.Digest // of the big file's blob
	localURL  string
	remoteURL string
	bigName   string   // the big file's store path basename, as the mounts show it
	readers   []string // reader files, relative to a mount's root
	readerCRC []uint32
	srv       *remoteServer
	blobs     castorepb.BlobServiceClient
	mounts    int
	localMode string // how the local-store mount reads: passthrough or not
}

func runRemoteWorkload(ctx context.Context, env *Env) ([]Result, error) {
	if !fuseUsable() {
		return []Result{{Workload: "remote", System: "all", Skipped: "/dev/fuse is not usable"}}, nil
	}
	b := &remoteBench{env: env, big: env.Corpus.BigFile}
	if b.big == "" {
		return nil, errors.New("the corpus has no big file (--big-size 0)")
	}
	var err error
	if b.size, err = fileSize(b.big); err != nil {
		return nil, err
	}
	if b.size < pageSize {
		return nil, fmt.Errorf("the big file has %d bytes, fewer than one 4 KiB read", b.size)
	}
	if b.bigCRC, err = fileCRC(b.big); err != nil {
		return nil, err
	}
	sz := remoteSizesFor(env.Smoke)
	readersDir := filepath.Join(env.Scratch, "remote-readers")
	if b.readerCRC, err = generateReaders(readersDir, sz.readers, sz.readerSize); err != nil {
		return nil, err
	}

	storeDir := filepath.Join(env.Scratch, "remote-store")
	bigPath, err := storefsImport(ctx, env, storeDir, b.big)
	if err != nil {
		return nil, err
	}
	readersPath, err := storefsImport(ctx, env, storeDir, readersDir)
	if err != nil {
		return nil, err
	}
	if b.digest, err = fileBlobDigest(ctx, storeDir, bigPath); err != nil {
		return nil, err
	}
	b.bigName = strings.TrimPrefix(bigPath, storeclient.StoreDir+"/")
	for i := range sz.readers {
		b.readers = append(b.readers, filepath.Join(strings.TrimPrefix(readersPath, storeclient.StoreDir+"/"), readerName(i)))
	}
	// The remote's disk is not what is measured: the server, and the
	// local-store mount it is compared with, read the store from the page
	// cache (the import writes big blobs past it).
	if err := warmCache(storeDir); err != nil {
		return nil, err
	}

	b.srv, err = startRemoteServer(ctx, env, storeDir, filepath.Join(env.Scratch, "remote-serve"))
	if err != nil {
		return nil, err
	}
	defer b.srv.stop()
	conn, err := grpc.NewClient("passthrough:///"+b.srv.grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The generated client names tvix.castore.v1; the server answers both
	// package names alike.
	b.blobs = castorepb.NewBlobServiceClient(conn)
	b.localURL, b.remoteURL = "local:"+storeDir, "grpc+http://"+b.srv.grpcAddr
	// One untimed stream checks what the server sends and opens the
	// connection, so the timed raw streams start as a mount's would.
	if _, err := b.rawRead(ctx); err != nil {
		return nil, fmt.Errorf("raw gRPC read (warm-up): %w", err)
	}

	var results []Result
	// Fixed seed: the same offsets in every run, on every machine.
	rng := rand.New(rand.NewPCG(1, 0x4e307e))
	for _, off := range []int64{0, rng.Int64N(b.size/pageSize) * pageSize} {
		rs, err := b.firstReads(ctx, off)
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
	}
	rs, err := b.seqReads(ctx)
	if err != nil {
		return nil, err
	}
	results = append(results, rs...)
	if rs, err = b.randomReads(ctx, distinctPages(rng, b.size/pageSize, sz.randReads)); err != nil {
		return nil, err
	}
	results = append(results, rs...)
	if rs, err = b.concurrentReaders(ctx, sz.readerSize); err != nil {
		return nil, err
	}
	results = append(results, rs...)
	// Known only once a local-store mount has opened a file.
	for i := range results {
		if results[i].System == localSystem {
			results[i].System += b.localMode
		}
	}
	return results, nil
}

const (
	localSystem  = "storefs mount local:"
	remoteSystem = "storefs mount grpc+http (storefs serve, loopback)"
	rawSystem    = "raw gRPC BlobService.Read, no verification"
)

// firstReads times open() to the first 4 KiB at off, each run on a fresh
// mount of the local store and of the remote. A new mount has new inodes,
// so nothing of the file is in the kernel's page cache.
func (b *remoteBench) firstReads(ctx context.Context, off int64) ([]Result, error) {
	want := make([]byte, pageSize)
	if err := preadFile(b.big, want, off); err != nil {
		return nil, err
	}
	walls, _, err := b.eachMount(ctx, func(m *mountSession) (time.Duration, error) {
		return timeFirstRead(filepath.Join(m.dir, b.bigName), off, want)
	})
	if err != nil {
		return nil, fmt.Errorf("first 4 KiB at %d: %w", off, err)
	}
	name := fmt.Sprintf("remote first 4 KiB at %d of %s, fresh mount", off, formatBytes(b.size))
	loc := walls[0].result(name, localSystem, true, 0, 0)
	rem := walls[1].result(name, remoteSystem, false, 0, 0)
	rem.Note = fmt.Sprintf("target ≤ %v: %s", firstReadTarget, metOrNot(rem.Wall <= firstReadTarget))
	return []Result{loc, rem}, nil
}

// seqReads times the whole big file read through a fresh remote mount
// against the raw stream of its blob, and counts the bytes the server sent
// for each.
func (b *remoteBench) seqReads(ctx context.Context) ([]Result, error) {
	var rawWalls, mountWalls rounds
	var rawSent, mountSent []sentBytes
	for range b.env.Runs {
		var d time.Duration
		sent, err := b.countSent(ctx, func() (err error) {
			d, err = b.rawRead(ctx)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("raw gRPC read: %w", err)
		}
		rawWalls, rawSent = append(rawWalls, d), append(rawSent, sent)
		// Counted until the unmount, so that streams the daemon still
		// held count too.
		sent, err = b.countSent(ctx, func() error {
			return b.withMount(ctx, b.remoteURL, func(m *mountSession) (err error) {
				d, err = timeSeqRead(filepath.Join(m.dir, b.bigName), b.size, b.bigCRC)
				return err
			})
		})
		if err != nil {
			return nil, fmt.Errorf("seq read via %s: %w", b.remoteURL, err)
		}
		mountWalls, mountSent = append(mountWalls, d), append(mountSent, sent)
	}
	name := "remote seq read " + formatBytes(b.size)
	raw := rawWalls.result(name, rawSystem, true, b.size, 1)
	raw.Note = "server sent " + sentPer(rawSent, float64(b.size), "×", "the blob")
	mount := mountWalls.result(name, remoteSystem, false, b.size, 1)
	ratio := raw.Wall.Seconds() / mount.Wall.Seconds()
	mount.Note = fmt.Sprintf("%.2f× raw throughput (target ≥ %.1f×: %s); server sent %s",
		ratio, seqThroughputTarget, metOrNot(ratio >= seqThroughputTarget), sentPer(mountSent, float64(b.size), "×", "the blob"))
	return []Result{raw, mount}, nil
}

// randomReads times open() and 4 KiB preads at offs through a fresh mount
// of the local store and of the remote.
func (b *remoteBench) randomReads(ctx context.Context, offs []int64) ([]Result, error) {
	got := make([]byte, len(offs)*pageSize)
	walls, sent, err := b.eachMount(ctx, func(m *mountSession) (time.Duration, error) {
		clear(got)
		d, err := timeRandomReads(filepath.Join(m.dir, b.bigName), offs, got)
		if err != nil {
			return 0, err
		}
		return d, checkPages(b.big, offs, got)
	})
	if err != nil {
		return nil, fmt.Errorf("random reads: %w", err)
	}
	name := fmt.Sprintf("remote %d random 4 KiB preads of %s, fresh mount", len(offs), formatBytes(b.size))
	n := len(offs)
	loc := walls[0].result(name, localSystem, true, int64(n)*pageSize, n)
	rem := walls[1].result(name, remoteSystem, false, int64(n)*pageSize, n)
	perSec := func(r Result) float64 { return float64(n) / r.Wall.Seconds() }
	loc.Note = fmt.Sprintf("%.0f reads/s", perSec(loc))
	rem.Note = fmt.Sprintf("%.0f reads/s, %s local's; server sent %s", perSec(rem), formatRatio(perSec(rem)/perSec(loc)),
		sentPer(sent, float64(n)*1024, " KiB", "per read"))
	return []Result{loc, rem}, nil
}

// concurrentReaders reads every reader file at once, one goroutine each,
// through a fresh mount of the local store and of the remote, and notes the
// mounting daemon's peak RSS.
func (b *remoteBench) concurrentReaders(ctx context.Context, readerSize int64) ([]Result, error) {
	var hwm [2]int64 // local, remote
	walls, sent, err := b.eachMount(ctx, func(m *mountSession) (time.Duration, error) {
		d, err := timeReaders(m.dir, b.readers, readerSize, b.readerCRC)
		if err != nil {
			return 0, err
		}
		peak, err := procStatusBytes(m.cmd.Process.Pid, "VmHWM")
		i := 0
		if m.url == b.remoteURL {
			i = 1
		}
		hwm[i] = max(hwm[i], peak)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("%d readers: %w", len(b.readers), err)
	}
	name := fmt.Sprintf("remote %d concurrent readers × %s, fresh mount", len(b.readers), formatBytes(readerSize))
	total := int64(len(b.readers)) * readerSize
	loc := walls[0].result(name, localSystem, true, total, len(b.readers))
	loc.Note = "daemon peak RSS " + formatBytes(hwm[0])
	rem := walls[1].result(name, remoteSystem, false, total, len(b.readers))
	within := "within"
	if hwm[1] > documentedRemoteRSSBound {
		within = "**over**"
	}
	rem.Note = fmt.Sprintf("daemon peak RSS %s (VmHWM), documented bound %s: %s; server sent %s",
		formatBytes(hwm[1]), formatBytes(documentedRemoteRSSBound), within, sentPer(sent, float64(total), "×", "the files"))
	return []Result{loc, rem}, nil
}

// eachMount runs fn env.Runs times on a fresh mount of the local store and
// of the remote, in turns, and returns the times fn returned (local's
// first, then remote's) and the bytes the server sent in each remote run,
// counted until its unmount.
func (b *remoteBench) eachMount(ctx context.Context, fn func(*mountSession) (time.Duration, error)) ([2]rounds, []sentBytes, error) {
	var walls [2]rounds
	var sent []sentBytes
	for range b.env.Runs {
		for i, url := range []string{b.localURL, b.remoteURL} {
			var d time.Duration
			s, err := b.countSent(ctx, func() error {
				return b.withMount(ctx, url, func(m *mountSession) (err error) {
					d, err = fn(m)
					return err
				})
			})
			if err != nil {
				return walls, nil, fmt.Errorf("via %s: %w", url, err)
			}
			walls[i] = append(walls[i], d)
			if url == b.remoteURL {
				sent = append(sent, s)
			}
		}
	}
	return walls, sent, nil
}

// countSent runs fn and returns the blob bytes the server sent meanwhile.
func (b *remoteBench) countSent(ctx context.Context, fn func() error) (sentBytes, error) {
	before, err := b.srv.sent(ctx)
	if err != nil {
		return sentBytes{}, err
	}
	if err := fn(); err != nil {
		return sentBytes{}, err
	}
	after, err := b.srv.sent(ctx)
	if err != nil {
		return sentBytes{}, err
	}
	return after.minus(before), nil
}

// rawRead streams the big file's blob from the server, bytes discarded
// after a checksum, and returns the time from the call to the end of the
// stream.
func (b *remoteBench) rawRead(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	t0 := time.Now()
	st, err := b.blobs.Read(ctx, &castorepb.ReadBlobRequest{Digest: b.digest[:]})
	if err != nil {
		return 0, err
	}
	var n int64
	var sum uint32
	for {
		c, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		n += int64(len(c.GetData()))
		sum = crc32.Update(sum, castagnoli, c.GetData())
	}
	d := time.Since(t0)
	if n != b.size || sum != b.bigCRC {
		return 0, fmt.Errorf("the stream of %s differs from the corpus's big file (%d bytes, want %d)", b.digest, n, b.size)
	}
	return d, nil
}

// withMount runs fn on a fresh `storefs mount` of url and unmounts it.
func (b *remoteBench) withMount(ctx context.Context, url string, fn func(*mountSession) error) error {
	b.mounts++
	m, err := startMount(ctx, b.env, url, filepath.Join(b.env.Scratch, fmt.Sprintf("mnt-remote%d", b.mounts)))
	if err != nil {
		return err
	}
	err = fn(m)
	if url == b.localURL && b.localMode == "" {
		b.localMode = m.readMode()
	}
	if uerr := m.unmount(); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if err != nil {
		return fmt.Errorf("%w\nstorefs mount's log:\n%s", err, m.log.String())
	}
	return nil
}

// timeFirstRead opens path and reads len(want) bytes at off; it returns the
// time from open() to the bytes read, and fails if they differ from want.
func timeFirstRead(path string, off int64, want []byte) (time.Duration, error) {
	buf := make([]byte, len(want))
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	_, err = f.ReadAt(buf, off)
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(buf, want) {
		return 0, fmt.Errorf("the %d bytes at %d differ from the corpus", len(want), off)
	}
	return d, nil
}

// timeSeqRead reads path from start to end in 1 MiB reads and returns the
// time from open() to EOF; the bytes must be size long with checksum sum.
func timeSeqRead(path string, size int64, sum uint32) (time.Duration, error) {
	buf := make([]byte, readBufSize)
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, got, err := readAll(f, buf)
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if n != size || got != sum {
		return 0, fmt.Errorf("%s differs from the corpus (%d bytes, want %d)", path, n, size)
	}
	return d, nil
}

// readAll reads f to its end with reads of len(buf) (io.Copy to
// io.Discard would read in 8 KiB pieces) and returns the length and
// CRC-32C of its bytes.
func readAll(f *os.File, buf []byte) (int64, uint32, error) {
	var n int64
	var sum uint32
	for {
		k, err := f.Read(buf)
		n += int64(k)
		sum = crc32.Update(sum, castagnoli, buf[:k])
		if err == io.EOF {
			return n, sum, nil
		}
		if err != nil {
			return n, sum, err
		}
	}
}

// timeRandomReads opens path and reads a page at each of offs into got, in
// order; it returns the time from open() to the last read, so that work a
// daemon does at open counts.
func timeRandomReads(path string, offs []int64, got []byte) (time.Duration, error) {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// No readahead, as fio sets for random reads: each pread asks the
	// daemon for its own 4 KiB.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		return 0, fmt.Errorf("fadvise: %w", err)
	}
	for i, off := range offs {
		if _, err := f.ReadAt(got[i*pageSize:(i+1)*pageSize], off); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

// distinctPages returns the offsets of n distinct pages (all, if fewer) of
// a file of pages pages, in random order, with Floyd's sampling: n draws,
// whatever the file's size.
func distinctPages(rng *rand.Rand, pages int64, n int) []int64 {
	n = int(min(int64(n), pages))
	seen := make(map[int64]bool, n)
	offs := make([]int64, 0, n)
	for j := pages - int64(n); j < pages; j++ {
		p := rng.Int64N(j + 1)
		if seen[p] {
			p = j
		}
		seen[p] = true
		offs = append(offs, p*pageSize)
	}
	rng.Shuffle(len(offs), func(a, b int) { offs[a], offs[b] = offs[b], offs[a] })
	return offs
}

// checkPages compares the pages read at offs with the file's.
func checkPages(path string, offs []int64, got []byte) error {
	want := make([]byte, pageSize)
	for i, off := range offs {
		if err := preadFile(path, want, off); err != nil {
			return err
		}
		if !bytes.Equal(got[i*pageSize:(i+1)*pageSize], want) {
			return fmt.Errorf("the 4 KiB at %d differ from the corpus", off)
		}
	}
	return nil
}

// timeReaders reads every file (relative to root) at once, one goroutine
// each, and returns the time until the last one is read and checked.
func timeReaders(root string, files []string, size int64, sums []uint32) (time.Duration, error) {
	var g errgroup.Group
	t0 := time.Now()
	for i, name := range files {
		g.Go(func() error {
			f, err := os.Open(filepath.Join(root, name))
			if err != nil {
				return err
			}
			defer f.Close()
			n, sum, err := readAll(f, make([]byte, readBufSize))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != size || sum != sums[i] {
				return fmt.Errorf("%s differs from the corpus (%d bytes, want %d)", name, n, size)
			}
			return nil
		})
	}
	err := g.Wait()
	return time.Since(t0), err
}

// generateReaders writes n files of size seeded random bytes into dir and
// returns their CRC-32C checksums.
func generateReaders(dir string, n int, size int64) ([]uint32, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := rand.NewChaCha8([32]byte{'r', 'e', 'm', 'o', 't', 'e', '-', 'r', 'e', 'a', 'd', 'e', 'r', 's'})
	buf := make([]byte, readBufSize)
	sums := make([]uint32, n)
	for i := range n {
		f, err := os.Create(filepath.Join(dir, readerName(i)))
		if err != nil {
			return nil, err
		}
		for left := size; left > 0; {
			b := buf[:min(int64(len(buf)), left)]
			data.Read(b)
			sums[i] = crc32.Update(sums[i], castagnoli, b)
			if _, err := f.Write(b); err != nil {
				f.Close()
				return nil, err
			}
			left -= int64(len(b))
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

func readerName(i int) string { return fmt.Sprintf("r%02d.bin", i) }

// fileCRC returns the CRC-32C of a file.
func fileCRC(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	_, sum, err := readAll(f, make([]byte, readBufSize))
	return sum, err
}

// preadFile fills buf from path at off.
func preadFile(path string, buf []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(buf, off)
	return err
}

// fileBlobDigest returns the blob digest of a file store path in the local
// store in storeDir.
func fileBlobDigest(ctx context.Context, storeDir, storePath string) (storeclient.Digest, error) {
	s, err := local.Open(ctx, storeDir, local.Options{ReadOnly: true})
	if err != nil {
		return storeclient.Digest{}, err
	}
	defer s.Close()
	sp, err := storeclient.ParseStorePath(storePath)
	if err != nil {
		return storeclient.Digest{}, err
	}
	info, err := s.GetPathInfo(ctx, sp.Digest)
	if err != nil {
		return storeclient.Digest{}, err
	}
	if info.Node.Kind() != storeclient.KindFile {
		return storeclient.Digest{}, fmt.Errorf("%s is a %s, not a file", storePath, info.Node.Kind())
	}
	return info.Node.Digest(), nil
}

// procStatusBytes returns a "kB" field of /proc/PID/status in bytes.
func procStatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// formatRatio formats a ratio with two significant digits when it is
// small, so that a slow system does not show 0.00×.
func formatRatio(r float64) string {
	if r < 0.1 {
		return fmt.Sprintf("%.2g×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func metOrNot(met bool) string {
	if met {
		return "met"
	}
	return "**not met**"
}

// sentBytes is a reading of the server's sent-bytes counter; ok is false
// when the server does not export it.
type sentBytes struct {
	bytes float64
	ok    bool
}

func (s sentBytes) minus(before sentBytes) sentBytes {
	return sentBytes{bytes: s.bytes - before.bytes, ok: s.ok && before.ok}
}

// sentPer formats the most bytes sent in one run over per, as in
// "1.00× the blob", or "n/a" when the server has no counter.
func sentPer(runs []sentBytes, per float64, unit, what string) string {
	most := 0.0
	for _, s := range runs {
		if !s.ok {
			return "n/a (no " + sentBytesMetric + ")"
		}
		most = max(most, s.bytes)
	}
	s := fmt.Sprintf("%.2f%s %s", most/per, unit, what)
	if len(runs) > 1 {
		s += fmt.Sprintf(" (most of %d runs)", len(runs))
	}
	return s
}

// remoteServer is `storefs serve` of a local store with gRPC and metrics
// on loopback ports it picks itself.
type remoteServer struct {
	cmd         *exec.Cmd
	done        chan error
	grpcAddr    string
	metricsAddr string
}

// startRemoteServer starts storefs serve over storeDir and reads the bound
// addresses from the lines it prints before "ready".
func startRemoteServer(ctx context.Context, env *Env, storeDir, dir string) (*remoteServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// No scrubber: its reads would land in the measurements.
	cfg := "store:\n  url: \"local:" + storeDir + "\"\n" +
		"grpc: {listen: 127.0.0.1:0}\nmetrics: {listen: 127.0.0.1:0}\n" +
		"scrub: {enabled: false}\nlog: {level: warn}\n"
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, env.Storefs, "serve", "--config", cfgFile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &remoteServer{cmd: cmd, done: make(chan error, 1)}
	addrs := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready := false
		for !ready && sc.Scan() {
			fs := strings.Fields(sc.Text())
			switch {
			case len(fs) == 1 && fs[0] == "ready":
				ready = true
			case len(fs) > 1 && fs[0] == "grpc":
				s.grpcAddr = fs[1]
			case len(fs) > 1 && fs[0] == "metrics":
				s.metricsAddr = fs[1]
			}
		}
		if !ready {
			addrs <- errors.New("storefs serve exited before ready")
		} else {
			addrs <- nil
		}
		io.Copy(io.Discard, out)
		s.done <- cmd.Wait()
	}()
	select {
	case err = <-addrs:
	case <-time.After(time.Minute):
		err = errors.New("storefs serve not ready after 1 min")
	}
	if err == nil && (s.grpcAddr == "" || s.metricsAddr == "") {
		err = errors.New("storefs serve printed no grpc or metrics address")
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	env.Log.Info("remote store served", "grpc", s.grpcAddr, "metrics", s.metricsAddr)
	return s, nil
}

// stop ends the server with SIGTERM, or SIGKILL if it takes too long.
func (s *remoteServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// sent reads the server's sent-bytes counter (summed over its labels).
func (s *remoteServer) sent(ctx context.Context) (sentBytes, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.metricsAddr+"/metrics", nil)
	if err != nil {
		return sentBytes{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sentBytes{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sentBytes{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseCounter(resp.Body, sentBytesMetric)
}

// parseCounter sums the samples of counter name in a Prometheus text
// exposition.
func parseCounter(r io.Reader, name string) (sentBytes, error) {
	var s sentBytes
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			return s, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return s, fmt.Errorf("metrics: %q: %w", line, err)
		}
		s.bytes += v
		s.ok = true
	}
	return s, sc.Err()
}

// mountSession is one `storefs mount` process and its mount.
type mountSession struct {
	url    string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been waited for
	log    *syncBuffer
	cancel context.CancelFunc
}

// startMount runs `storefs --store url mount dir` and waits until the
// daemon answers on dir.
func startMount(ctx context.Context, env *Env, url, dir string) (*mountSession, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	mctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	m := &mountSession{url: url, dir: dir, log: &syncBuffer{}, exited: make(chan struct{}), cancel: cancel}
	m.cmd = exec.CommandContext(mctx, env.Storefs, "--store", url, "mount", dir)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	early := make(chan error, 1) // for waitMounted, which takes the exit status
	go func() {
		early <- m.cmd.Wait()
		close(m.exited)
	}()
	err := waitMounted(dir, early)
	if err == nil {
		// A stat of the root goes through the daemon, so it is serving.
		_, err = os.Stat(dir)
	}
	if err != nil {
		err = fmt.Errorf("storefs mount %s: %w: %s", url, err, m.log.String())
		if uerr := m.unmount(); uerr != nil {
			env.Log.Warn("unmount", "dir", dir, "err", uerr)
		}
		return nil, err
	}
	return m, nil
}

// unmount unmounts the mount, which makes the daemon exit; a daemon that
// does not is killed and its mount detached.
func (m *mountSession) unmount() error {
	defer m.cancel()
	var err error
	if inMounts(m.dir) {
		err = unmountFUSE(m.dir)
	}
	if err == nil {
		select {
		case <-m.exited:
			return nil
		case <-time.After(30 * time.Second):
			err = errors.New("storefs mount still running 30 s after the unmount")
		}
	}
	m.cmd.Process.Kill()
	<-m.exited
	if inMounts(m.dir) {
		err = errors.Join(err, syscall.Unmount(m.dir, syscall.MNT_DETACH))
	}
	return err
}

// readMode says how the mount served reads, from its log.
func (m *mountSession) readMode() string {
	switch s := m.log.String(); {
	case strings.Contains(s, "passthrough on"):
		return " (passthrough)"
	case strings.Contains(s, "passthrough off"):
		return " (no passthrough)"
	}
	return ""
}

// syncBuffer collects a process's output, up to 1 MiB, for error messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := 1<<20 - s.b.Len(); room > 0 {
		s.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

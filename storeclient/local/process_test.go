package local_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

// The tests below re-execute the test binary as a child process. The child
// sees these variables and runs childMain instead of the tests.
const (
	envChild = "STOREFS_LOCAL_TEST_CHILD" // "write", "write-packed", "put-one", "hold-rw" or "hold-ro"
	envDir   = "STOREFS_LOCAL_TEST_DIR"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		if err := childMain(mode, os.Getenv(envDir)); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childMain is the child process: "write" ("write-packed": with
// PutSmallBlob) writes to the store until it is
// killed; "put-one" opens the store read-write, puts onePathInfo and closes
// the store, then waits until stdin is closed; "hold-rw"/"hold-ro" open the
// store and keep it open until stdin is closed. Each prints "ready" once it
// is under way (put-one: once it has closed the store).
func childMain(mode, dir string) error {
	ctx := context.Background()
	switch mode {
	case "put-one":
		s, err := local.Open(ctx, dir, local.Options{})
		if err != nil {
			return err
		}
		data, p, err := onePathInfo()
		if err != nil {
			s.Close()
			return err
		}
		if err := storetest.PutBlob(ctx, s, data); err != nil {
			s.Close()
			return err
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			s.Close()
			return err
		}
		if err := s.Close(); err != nil {
			return err
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return nil
	case "write", "write-packed":
		s, err := local.Open(ctx, dir, local.Options{LockTimeout: 30 * time.Second})
		if err != nil {
			return err
		}
		defer s.Close()
		return writeForever(ctx, s, mode == "write-packed")
	case "hold-rw", "hold-ro":
		s, err := local.Open(ctx, dir, local.Options{ReadOnly: mode == "hold-ro"})
		if err != nil {
			return err
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return s.Close()
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// writeForever imports small trees the way an importer does (blobs, then
// Directories leaves first, then the PathInfo), as fast as it can, for at
// most 100000 rounds (the parent kills it long before). With packed, the
// blobs of a round are put with PutSmallBlob from goroutines of their own,
// as the importer's workers do, and every other round repeats the blobs of
// the round before (dedup).
func writeForever(ctx context.Context, s *local.Store, packed bool) error {
	pid := os.Getpid()
	for i := range 100000 {
		var files []storeclient.Entry
		var datas [][]byte
		for j := range 3 {
			round := i
			if packed && i%2 == 1 {
				round = i - 1
			}
			data := make([]byte, (round*7919+j*104729)%(64<<10))
			copy(data, fmt.Sprintf("pid %d round %d blob %d", pid, round, j))
			datas = append(datas, data)
			name, _ := storeclient.NewName(fmt.Sprintf("f%d", j))
			files = append(files, storeclient.Entry{Name: name, Node: storeclient.FileNode(storeclient.HashBytes(data), uint64(len(data)), j == 0)})
		}
		errs := make([]error, len(datas))
		var wg sync.WaitGroup
		for j, data := range datas {
			if !packed {
				errs[j] = storetest.PutBlob(ctx, s, data)
				continue
			}
			wg.Go(func() { errs[j] = s.PutSmallBlob(ctx, storeclient.HashBytes(data), data) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		leaf, err := storeclient.NewDirectory(files...)
		if err != nil {
			return err
		}
		sub, _ := storeclient.NewName("sub")
		root, err := storeclient.NewDirectory(append(files[:1:1], storeclient.Entry{Name: sub, Node: storeclient.DirectoryNode(leaf.Digest(), leaf.Size())})...)
		if err != nil {
			return err
		}
		if i%2 == 0 {
			err = s.PutDirectories(ctx, []*storeclient.Directory{leaf, root})
		} else {
			for _, d := range []*storeclient.Directory{leaf, root} {
				if _, err = s.PutDirectory(ctx, d); err != nil {
					break
				}
			}
		}
		if err != nil {
			return err
		}
		sp := storeclient.StorePath{Digest: storeclient.StorePathDigest{byte(pid), byte(pid >> 8), byte(pid >> 16), byte(i), byte(i >> 8), byte(i >> 16)}, Name: "crash-test"}
		p, err := storetest.PathInfoFor(sp.Basename(), storeclient.DirectoryNode(root.Digest(), root.Size()))
		if err != nil {
			return err
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
	return nil
}

// onePathInfo returns the blob and the PathInfo that the "put-one" child
// puts.
func onePathInfo() ([]byte, *storeclient.PathInfo, error) {
	data := []byte("written by another process")
	sp := storeclient.StorePath{Digest: storeclient.StorePathDigest{0x0e, 0x11, 0x0e}, Name: "put-one"}
	p, err := storetest.PathInfoFor(sp.Basename(), storeclient.FileNode(storeclient.HashBytes(data), uint64(len(data)), false))
	return data, p, err
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startChild starts the test binary in a child mode on dir and waits until
// it prints "ready".
func startChild(t *testing.T, mode, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envDir+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child %s printed %q, %v; want ready", mode, line, err)
	}
	return c
}

// stop closes the child's stdin and waits for it to exit cleanly.
func (c *child) stop(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// TestCrashConsistency kills a writing process with SIGKILL at an arbitrary
// point, several times over one store: every time, the store must verify
// clean and every PathInfo must have all of its content.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	t.Run("blob files", func(t *testing.T) { testCrashConsistency(t, "write") })
	t.Run("packed", func(t *testing.T) { testCrashConsistency(t, "write-packed") })
}

func testCrashConsistency(t *testing.T, mode string) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	for round := range 3 {
		c := startChild(t, mode, dir)
		time.Sleep(time.Duration(100+50*round) * time.Millisecond)
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		c.cmd.Wait()

		s, err := local.Open(ctx, dir, local.Options{})
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		st, err := s.Verify(ctx, func(p local.Problem) { t.Errorf("round %d: after kill: %v", round, p) })
		if err != nil {
			t.Fatalf("round %d: Verify: %v", round, err)
		}
		if st.PathInfos == 0 {
			t.Fatalf("round %d: the child wrote no PathInfo before it was killed", round)
		}
		n := 0
		for p, err := range s.ListPathInfos(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			checkClosure(t, s, p.Node)
			n++
		}
		t.Logf("round %d: %d PathInfos, %d Directories, %d blobs (%d bytes) survive the kill", round, n, st.Directories, st.Blobs, st.BlobBytes)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// checkClosure checks that everything below n is stored and readable.
func checkClosure(t *testing.T, s storeclient.Store, n storeclient.Node) {
	t.Helper()
	ctx := t.Context()
	switch n.Kind() {
	case storeclient.KindFile:
		size, err := s.StatBlob(ctx, n.Digest())
		if err != nil || uint64(size) != n.Size() {
			t.Errorf("blob %s: size %d, %v; want %d", n.Digest(), size, err, n.Size())
			return
		}
		r, err := s.OpenBlob(ctx, n.Digest())
		if err != nil {
			t.Errorf("blob %s: %v", n.Digest(), err)
			return
		}
		defer r.Close()
		h := storeclient.NewHasher()
		if _, err := io.Copy(h, io.NewSectionReader(r, 0, r.Size())); err != nil {
			t.Errorf("read blob %s: %v", n.Digest(), err)
		} else if got := storeclient.Digest(h.Sum(nil)); got != n.Digest() {
			t.Errorf("blob %s reads back as %s", n.Digest(), got)
		}
	case storeclient.KindDirectory:
		dir, err := s.GetDirectory(ctx, n.Digest())
		if err != nil {
			t.Errorf("directory: %v", err)
			return
		}
		for _, e := range dir.Entries() {
			checkClosure(t, s, e.Node)
		}
	}
}

func TestLockTwoProcesses(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	quick := local.Options{LockTimeout: 50 * time.Millisecond}
	quickRO := local.Options{LockTimeout: 50 * time.Millisecond, ReadOnly: true}

	// A writer in another process excludes a writer here, naming its pid,
	// but not a reader.
	c := startChild(t, "hold-rw", dir)
	want := fmt.Sprintf("store %s is locked by pid %d", dir, c.cmd.Process.Pid)
	s, err := local.Open(ctx, dir, quick)
	if err == nil {
		s.Close()
		t.Fatal("read-write open succeeded while another process has the store open read-write")
	}
	if err.Error() != want {
		t.Errorf("read-write open error = %q, want %q", err, want)
	}
	r, err := local.Open(ctx, dir, quickRO)
	if err != nil {
		t.Fatalf("read-only open next to another process's read-write open: %v", err)
	}
	if _, err := r.GetDirectory(ctx, storeclient.EmptyDigest); !errors.Is(err, storeclient.ErrNotFound) {
		t.Errorf("read next to a writer in another process: %v", err)
	}
	r.Close()

	// A writer that may wait gets the store once the other writer closes it.
	go func() {
		time.Sleep(100 * time.Millisecond)
		c.stdin.Close()
	}()
	s, err = local.Open(ctx, dir, local.Options{LockTimeout: time.Minute})
	if err != nil {
		t.Fatalf("waiting read-write open: %v", err)
	}
	s.Close()
	c.cmd.Wait()

	// Readers in two processes stay open while a writer in a third one
	// opens the store, puts a PathInfo and closes it; the readers then see
	// the PathInfo.
	hold := startChild(t, "hold-ro", dir)
	r, err = local.Open(ctx, dir, quickRO)
	if err != nil {
		t.Fatalf("read-only open next to another process's read-only open: %v", err)
	}
	defer r.Close()
	_, p, err := onePathInfo()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetPathInfo(ctx, p.StorePath.Digest); !errors.Is(err, storeclient.ErrNotFound) {
		t.Fatalf("GetPathInfo before the write = %v, want ErrNotFound", err)
	}
	w := startChild(t, "put-one", dir)
	w.stop(t)
	got, err := r.GetPathInfo(ctx, p.StorePath.Digest)
	if err != nil {
		t.Fatalf("GetPathInfo of a PathInfo another process wrote while this reader was open: %v", err)
	}
	if got.StorePath != p.StorePath || got.Node != p.Node {
		t.Errorf("GetPathInfo = %v %v, want %v %v", got.StorePath, got.Node, p.StorePath, p.Node)
	}
	n := 0
	for _, err := range r.ListPathInfos(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("ListPathInfos yielded %d PathInfos, want 1", n)
	}
	hold.stop(t)
}

// TestLockInProcess checks that two writers in one process exclude each
// other like two processes do, and that readers open next to a writer.
func TestLockInProcess(t *testing.T) {
	ctx := t.Context()
	w, dir := openStore(t, local.Options{})
	s, err := local.Open(ctx, dir, local.Options{LockTimeout: -1})
	if err == nil {
		s.Close()
		t.Fatal("read-write open succeeded while this process has the store open read-write")
	}
	if !strings.Contains(err.Error(), "is locked") {
		t.Errorf("error %q does not say the store is locked", err)
	}
	r1, err := local.Open(ctx, dir, local.Options{ReadOnly: true, LockTimeout: -1})
	if err != nil {
		t.Fatalf("read-only open next to a writer in this process: %v", err)
	}
	defer r1.Close()
	// The failed open and the reader must not have released the writer's
	// lock.
	if s, err := local.Open(ctx, dir, local.Options{LockTimeout: -1}); err == nil {
		s.Close()
		t.Fatal("a failed open or a reader released the writer's lock")
	}
	// The writer writes while the reader is open, and the reader sees it.
	data := []byte("in process")
	if err := storetest.PutBlob(ctx, w, data); err != nil {
		t.Fatal(err)
	}
	p, err := storetest.PathInfoFor((storeclient.StorePath{Digest: storeclient.StorePathDigest{7}, Name: "in-process"}).Basename(),
		storeclient.FileNode(storeclient.HashBytes(data), uint64(len(data)), false))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutPathInfo(ctx, p); err != nil {
		t.Fatalf("put next to an open reader: %v", err)
	}
	if _, err := r1.GetPathInfo(ctx, p.StorePath.Digest); err != nil {
		t.Fatalf("reader does not see the writer's PathInfo: %v", err)
	}
	w.Close()
	// Once the writer is closed, another writer opens, next to the reader.
	w2, err := local.Open(ctx, dir, local.Options{LockTimeout: -1})
	if err != nil {
		t.Fatalf("read-write open after the writer closed, next to a reader: %v", err)
	}
	w2.Close()
}

func TestOpenCancelled(t *testing.T) {
	_, dir := openStore(t, local.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s, err := local.Open(ctx, dir, local.Options{LockTimeout: time.Hour})
	if err == nil {
		s.Close()
		t.Fatal("open of a locked store with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

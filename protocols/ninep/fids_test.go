package ninep_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/vfs"
)

// deepNames returns the first n names of the path down deepTree's nested
// directories: root, d0, d1, …
func deepNames(root string, n int) []string {
	names := []string{root}
	for i := 0; len(names) < n; i++ {
		names = append(names, fmt.Sprintf("d%d", i))
	}
	return names
}

// waitFids waits (bounded) until srv counts want fid references: replies
// are accounted for as they are sent, just after the client may have them.
func waitFids(t *testing.T, srv *ninep.Server, want int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if ninep.ServerFids(srv) == want {
			return
		}
	}
	t.Fatalf("server counts %d fid references, want %d", ninep.ServerFids(srv), want)
}

// TestFidReferences: MaxFids counts walk-path entries, one per name a walk
// passed through, kept while a fid walked from them lives; the count
// follows clunks, replaced fids, clones, xattr fids and attaches, and goes
// back to zero when connections end.
func TestFidReferences(t *testing.T) {
	fsys, root, _ := deepTree(t)
	srv, addr := startServer(t, fsys, "tcp", ninep.Options{MaxFids: 100})
	c := session(t, addr, 8192) // fid 1: 1
	for i := range 6 {
		if _, err := c.walk(1, uint32(10+i), deepNames(root, 16)...); err != nil {
			t.Fatal(err)
		}
	}
	waitFids(t, srv, 97)
	_, err := c.walk(1, 20, deepNames(root, 4)...)
	wantErrno(t, "a walk of 4 names with 97 of 100 references held", err, syscall.EMFILE)
	if _, err := c.walk(1, 20, deepNames(root, 3)...); err != nil {
		t.Fatalf("a walk of 3 names with 97 of 100 held: %v", err)
	}
	waitFids(t, srv, 100)
	// A walk from fid 10 keeps fid 10's 16 references after its clunk.
	c.clunk(20)
	if _, err := c.walk(10, 21, "d15"); err != nil {
		t.Fatal(err)
	}
	c.clunk(10)
	waitFids(t, srv, 1+5*16+17)
	// Replacing fid 11 frees its 16: a walk of 16 more to it fits.
	if _, err := c.walk(1, 11, deepNames(root, 16)...); err != nil {
		t.Errorf("replacing a fid at the limit: %v", err)
	}
	waitFids(t, srv, 1+5*16+17)
	// A clone counts 1 (a sibling: its parent is shared), an xattr fid 1.
	if _, err := c.walk(21, 22); err != nil {
		t.Fatal(err)
	}
	if _, err := c.call(txattrwalk, msg{}.u32(1).u32(23).str("")); err != nil {
		t.Fatal(err)
	}
	waitFids(t, srv, 1+5*16+17+2)
	_, err = c.walk(1, 24)
	wantErrno(t, "a clone beyond the limit", err, syscall.EMFILE)
	for _, fid := range []uint32{21, 22, 23, 11} {
		if err := c.clunk(fid); err != nil {
			t.Fatal(err)
		}
	}
	waitFids(t, srv, 1+4*16)
	// An aname of 3 components: one entry, the attach root (a walk of
	// ".." never goes above it).
	if _, err := c.attach(30, "", root+"/d0/d1", 0); err != nil {
		t.Fatal(err)
	}
	waitFids(t, srv, 1+4*16+1)
	c.conn.Close()
	waitFids(t, srv, 0)
}

// TestServerFids: MaxServerFids bounds the references of all connections
// together, each connection's first 1 024 apart; a connection that ends
// gives its back.
func TestServerFids(t *testing.T) {
	fsys, root, _ := deepTree(t)
	srv, addr := startServer(t, fsys, "tcp", ninep.Options{MaxServerFids: 50})
	a := session(t, addr, 8192)
	for i := range 3 {
		if _, err := a.walk(1, uint32(10+i), deepNames(root, 16)...); err != nil {
			t.Fatal(err)
		}
	}
	// Past the server's limit, a connection still makes its first
	// 1 024.
	b := session(t, addr, 8192)
	for i := range 1023 / 16 {
		if _, err := b.walk(1, uint32(10+i), deepNames(root, 16)...); err != nil {
			t.Fatalf("a walk within a connection's first 1024: %v", err)
		}
	}
	_, err := b.walk(1, 2, deepNames(root, 16)...)
	wantErrno(t, "a walk beyond the server's limit and the connection's first 1024", err, syscall.EMFILE)
	if _, err := b.walk(1, 2, deepNames(root, 15)...); err != nil {
		t.Errorf("the connection's 1024th reference: %v", err)
	}
	a.conn.Close()
	waitFids(t, srv, 1024)
	if _, err := b.walk(1, 3, deepNames(root, 16)...); err == nil {
		t.Error("a walk with the server's 50 held by one connection succeeded")
	}
	b.conn.Close()
	waitFids(t, srv, 0)
	c := session(t, addr, 8192)
	for i := range 3 {
		if _, err := c.walk(1, uint32(10+i), deepNames(root, 16)...); err != nil {
			t.Errorf("after the others ended: %v", err)
		}
	}
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestFidMemory: the heap a connection holds for fids is bounded by
// MaxFids however the fids are made (here by Twalks of 16 names, each
// holding 16 walk-path entries), and what one entry costs.
// NINEP_HEAP_PROFILE=FILE writes a heap profile with the fids held.
func TestFidMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 65 536 fid references")
	}
	fsys, root, _ := deepTree(t)
	srv, addr := startServer(t, fsys, "tcp", ninep.Options{})
	for _, n := range []int{1, 16} {
		c := session(t, addr, 8192)
		names := deepNames(root, n)
		if _, err := c.walk(1, 2, names...); err != nil { // the directories' vfs nodes and caches
			t.Fatal(err)
		}
		c.clunk(2)
		before := heapInUse()
		fids := 0
		for ; ; fids++ {
			_, err := c.walk(1, uint32(100+fids), names...)
			if err == syscall.EMFILE {
				break
			}
			if err != nil {
				t.Fatalf("fid %d: %v", fids, err)
			}
		}
		grew := int64(heapInUse()) - int64(before)
		if p := os.Getenv("NINEP_HEAP_PROFILE"); p != "" {
			f, err := os.Create(fmt.Sprintf("%s.%d", p, n))
			if err != nil {
				t.Fatal(err)
			}
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		refs := fids * n
		t.Logf("walks of %d names: %d fids, %d references, %.1f MiB of heap: %d bytes per fid, %d per reference",
			n, fids, refs, float64(grew)/(1<<20), grew/int64(fids), grew/int64(refs))
		if refs+1 > ninep.DefaultMaxFids {
			t.Errorf("%d references made, limit %d", refs+1, ninep.DefaultMaxFids)
		}
		if grew > 48<<20 {
			t.Errorf("a connection at MaxFids holds %d MiB of heap", grew>>20)
		}
		c.conn.Close()
		waitFids(t, srv, 0)
	}
}

// TestReadBuffers: a client that sends many reads and takes no reply pins
// at most MaxReadBytes of read buffers (before, one msize
// buffer per request in flight: up to MaxRequests of them).
func TestReadBuffers(t *testing.T) {
	fsys, _ := localFS(t, vfs.Options{})
	_, addr := startServer(t, fsys, "tcp", ninep.Options{NoSendfile: true})
	before := heapInUse()
	c := openRaw(t, "tcp", addr, 1<<20, rootBig1)
	var out []byte
	for tag := uint16(10); tag < 210; tag++ {
		out = append(out, frame(tread, tag, msg{}.u32(2).u64(0).u32(1<<20))...)
	}
	go c.send(out)
	time.Sleep(500 * time.Millisecond) // the server has read what it will
	if grew := int64(heapInUse()) - int64(before); grew > 32<<20 {
		t.Errorf("200 reads of 1 MiB left unanswered hold %d MiB", grew>>20)
	}
	stillServes(t, addr)
}

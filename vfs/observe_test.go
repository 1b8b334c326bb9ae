package vfs_test

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// recorder is an Observer that counts what it is told.
type recorder struct {
	mu      sync.Mutex
	started map[string]int // protocol/op
	ended   map[string]int
	errs    map[string]int
	bytes   map[string]int // protocol
	cache   map[string]int // cache/hit|miss
	backend map[string]int
}

func newRecorder() *recorder {
	return &recorder{started: map[string]int{}, ended: map[string]int{}, errs: map[string]int{},
		bytes: map[string]int{}, cache: map[string]int{}, backend: map[string]int{}}
}

func (r *recorder) OpStart(protocol string, op vfs.Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started[protocol+"/"+op.String()]++
}

func (r *recorder) OpEnd(protocol string, op vfs.Op, _ time.Duration, n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended[protocol+"/"+op.String()]++
	r.bytes[protocol] += n
	if err != nil {
		r.errs[protocol+"/"+op.String()]++
	}
}

func (r *recorder) CacheLookup(cache string, hit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := cache + "/miss"
	if hit {
		k = cache + "/hit"
	}
	r.cache[k]++
}

func (r *recorder) BackendCall(call string, _ time.Duration, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backend[call]++
}

func TestObserverViews(t *testing.T) {
	rec := newRecorder()
	fsys := newFS(t, fixtures(t), vfs.Options{Observer: rec})
	nfs, ninep := fsys.View("nfs"), fsys.View("ninep")
	if nfs.Protocol() != "nfs" || fsys.Protocol() != "" {
		t.Fatalf("protocols %q %q", nfs.Protocol(), fsys.Protocol())
	}
	ctx := t.Context()

	// The same file read through two views: one Directory fetch, shared.
	for _, v := range []*vfs.FS{nfs, ninep} {
		dir, err := v.Lookup(ctx, v.Root(), storetest.RootComplicated)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.ReadDir(ctx, dir, 0, 0); err != nil {
			t.Fatal(err)
		}
		file, err := v.Lookup(ctx, v.Root(), storetest.RootBlobA)
		if err != nil {
			t.Fatal(err)
		}
		fl, err := v.Open(ctx, file)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, fl.Size()+10)
		if n, err := fl.ReadAt(buf, 0); n != int(fl.Size()) || err != io.EOF {
			t.Fatalf("ReadAt = %d, %v; want %d, EOF", n, err, fl.Size())
		}
		fl.Close()
		if _, err := v.Lookup(ctx, dir, "no-such-name"); err == nil {
			t.Fatal("lookup of a missing name succeeded")
		}
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range []string{"nfs", "ninep"} {
		for _, op := range []string{"lookup", "readdir", "open", "read", "close"} {
			k := p + "/" + op
			if rec.started[k] == 0 || rec.started[k] != rec.ended[k] {
				t.Errorf("%s: started %d, ended %d", k, rec.started[k], rec.ended[k])
			}
		}
		if rec.errs[p+"/lookup"] != 1 {
			t.Errorf("%s lookup errors = %d, want 1 (the missing name)", p, rec.errs[p+"/lookup"])
		}
		if rec.errs[p+"/read"] != 0 {
			t.Errorf("%s read errors = %d, want 0 (EOF is not an error)", p, rec.errs[p+"/read"])
		}
		if rec.bytes[p] == 0 {
			t.Errorf("%s: no bytes reported", p)
		}
	}
	if rec.bytes["nfs"] != rec.bytes["ninep"] {
		t.Errorf("bytes nfs %d != ninep %d", rec.bytes["nfs"], rec.bytes["ninep"])
	}
	if rec.backend[vfs.BackendGetDirectory] != 1 {
		t.Errorf("GetDirectory calls = %d, want 1 (views share the cache)", rec.backend[vfs.BackendGetDirectory])
	}
	if rec.cache["directory/hit"] == 0 || rec.cache["directory/miss"] != 1 {
		t.Errorf("directory cache = %v, want 1 miss and some hits", rec.cache)
	}
	if rec.backend[vfs.BackendGetPathInfo] != 4 {
		t.Errorf("GetPathInfo calls = %d, want 4", rec.backend[vfs.BackendGetPathInfo])
	}
}

func TestWalkReportedOnce(t *testing.T) {
	rec := newRecorder()
	fsys := newFS(t, fixtures(t), vfs.Options{Observer: rec}).View("cli")
	if _, err := fsys.Walk(t.Context(), storetest.RootComplicated+"/keep", false); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.started["cli/walk"] != 1 || rec.started["cli/lookup"] != 0 {
		t.Errorf("walk reported %v; want one walk and no lookups", rec.started)
	}
}

func TestSetCacheSizes(t *testing.T) {
	rec := newRecorder()
	fsys := newFS(t, fixtures(t), vfs.Options{Observer: rec})
	ctx := t.Context()
	dir := walk(t, fsys, storetest.RootComplicated)
	if _, err := fsys.ReadDir(ctx, dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	fsys.SetCacheSizes(1, 1, 1)
	other := walk(t, fsys, storetest.RootWithKeep)
	for _, d := range []vfs.Node{other, dir} {
		if _, err := fsys.ReadDir(ctx, d, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// With room for one Directory, the first was evicted by the second.
	if got := rec.backend[vfs.BackendGetDirectory]; got != 3 {
		t.Errorf("GetDirectory calls = %d, want 3 after shrinking the cache to 1", got)
	}
}

func TestOpString(t *testing.T) {
	seen := map[string]bool{}
	for op := vfs.Op(0); op < vfs.NumOps; op++ {
		s := op.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("Op(%d).String() = %q", op, s)
		}
		seen[s] = true
	}
	if vfs.NumOps.String() != "unknown" {
		t.Errorf("NumOps.String() = %q", vfs.NumOps.String())
	}
}

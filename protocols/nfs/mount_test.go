package nfs

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

// TestMount checks MNT, UMNT and both NULLs as the record layer answers
// them, and the log lines of mounts and refusals.
func TestMount(t *testing.T) {
	fsys, _ := fixtureFS(t, vfs.Options{})
	logs := &logLines{t: t}
	_, addr := serveTest(t, fsys, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c := dialT(t, addr)

	for _, prog := range []uint32{progNFS, progMount} {
		if body, err := c.call(prog, 3, 0, nil); err != nil || len(body) != 0 {
			t.Errorf("NULL of program %d = %x, %v; want an empty reply", prog, body, err)
		}
	}

	// mountres3: status, the handle, the flavors AUTH_UNIX and AUTH_NULL.
	var w xdrWriter
	w.string("/" + storetest.RootComplicated)
	body, err := c.call(progMount, 3, 1, w.b)
	if err != nil {
		t.Fatal(err)
	}
	r := xdrReader{b: body}
	st, fh := r.u32(), r.opaque(maxFH)
	flavors := []uint32{}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		flavors = append(flavors, r.u32())
	}
	if st != 0 || r.err != nil || len(r.b) != 0 || len(flavors) != 2 || flavors[0] != authSys || flavors[1] != authNone {
		t.Fatalf("MNT = %x: status %d, flavors %v, %v", body, st, flavors, r.err)
	}
	want, err := c.Handle(storetest.RootComplicated)
	if err != nil || !bytes.Equal(fh, want) {
		t.Errorf("MNT handle %x, LOOKUP gives %x (%v)", fh, want, err)
	}

	long := strings.Repeat("x", mntPathLen+1)
	for _, tc := range []struct {
		name string
		args []byte
		want uint32 // mountstat3, or acceptGarbageArgs<<16 for GARBAGE_ARGS
	}{
		{"longest path", func() []byte { var w xdrWriter; w.string(strings.Repeat("/a", mntPathLen/2)); return w.b }(), nfs3ErrNoEnt},
		{"path too long", func() []byte { var w xdrWriter; w.string(long); return w.b }(), nfs3ErrNameLong},
		{"huge declared path", []byte{0xf0, 0, 0, 0, '/', 'a', 'b', 'c'}, nfs3ErrNameLong},
		{"huge declared path, nothing sent", []byte{0xff, 0xff, 0xff, 0xff}, nfs3ErrNameLong},
		{"path cut short", []byte{0, 0, 0, 10, '/', 'a', 'b', 'c'}, acceptGarbageArgs << 16},
		{"no path", nil, acceptGarbageArgs << 16},
		{"file", func() []byte { var w xdrWriter; w.string(storetest.RootBlobA); return w.b }(), nfs3ErrNotDir},
	} {
		body, err := c.call(progMount, 3, 1, tc.args)
		var re *rpcError
		switch {
		case tc.want == acceptGarbageArgs<<16:
			if !errors.As(err, &re) || re.stat != acceptGarbageArgs {
				t.Errorf("MNT %s = %x, %v; want GARBAGE_ARGS", tc.name, body, err)
			}
		case err != nil || !bytes.Equal(body, (&xdrWriter{}).u32s(tc.want)):
			t.Errorf("MNT %s = %x, %v; want status %d alone", tc.name, body, err, tc.want)
		}
	}
	var u xdrWriter
	u.string("/")
	if body, err := c.call(progMount, 3, 3, u.b); err != nil || len(body) != 0 {
		t.Errorf("UMNT = %x, %v", body, err)
	}
	var re *rpcError
	if _, err := c.call(progMount, 3, 3, []byte{0xf0, 0, 0, 0}); !errors.As(err, &re) || re.stat != acceptGarbageArgs {
		t.Errorf("UMNT with a huge path: %v, want GARBAGE_ARGS", err)
	}

	out := logs.String()
	for _, line := range []string{
		`msg="nfs: mount" client=` + c.nc.LocalAddr().String() + ` path=/` + storetest.RootComplicated,
		`msg="nfs: mount refused: path too long"`,
		`bytes=4026531840 max=1024`,
		`msg="nfs: mount refused" client=`,
		`err="not a directory"`,
	} {
		if !strings.Contains(out, line) {
			t.Errorf("log lacks %s", line)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 600 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
}

// u32s returns the XDR encoding of vs after w's bytes.
func (w *xdrWriter) u32s(vs ...uint32) []byte {
	for _, v := range vs {
		w.u32(v)
	}
	return w.b
}

package main

import (
	"bytes"
	"strings"
	"syscall"
	"testing"

	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/storetest"
	"github.com/storefs/storefs/vfs"
)

func fixtureVFS(t *testing.T) *vfs.FS {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := storetest.NewFixtures().Fill(t.Context(), s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	fsys, err := newCLIVFS(s)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func TestLs(t *testing.T) {
	fsys := fixtureVFS(t)
	for _, tc := range []struct {
		name, path string
		long       bool
		want       string
	}{
		{"root", "", false, strings.Join([]string{
			storetest.RootBlobA, storetest.RootSymlinkA, storetest.RootWithKeep, storetest.RootComplicated,
			storetest.RootSymlinkOut, storetest.RootBlobB, storetest.RootHelloExec}, "\n") + "\n"},
		{"dir", storetest.RootComplicated, false, ".keep\naa\nkeep\n"},
		{"absolute", "/nix/store/" + storetest.RootComplicated + "/keep", false, ".keep\n"},
		{"long", storetest.RootComplicated, true,
			"-r--r--r-- 1 0 0 0 .keep\nLr--r--r-- 1 0 0 24 aa -> /nix/store/somewhereelse\ndr-xr-xr-x 2 0 0 2 keep\n"},
		{"file", storetest.RootHelloExec, true, "-r-xr-xr-x 1 0 0 12 " + storetest.RootHelloExec + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := runLs(t.Context(), &out, fsys, tc.path, tc.long); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("ls %q:\n%s\nwant:\n%s", tc.path, out.String(), tc.want)
			}
		})
	}
}

func TestCat(t *testing.T) {
	fsys := fixtureVFS(t)
	var out bytes.Buffer
	if err := runCat(t.Context(), &out, fsys, storetest.RootBlobB); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), storetest.BlobB) {
		t.Errorf("cat BLOB_B: %d bytes", out.Len())
	}
	out.Reset()
	if err := runCat(t.Context(), &out, fsys, storetest.RootSymlinkA); err != nil || !bytes.Equal(out.Bytes(), storetest.BlobA) {
		t.Errorf("cat through symlink = %x, %v", out.Bytes(), err)
	}
	err := runCat(t.Context(), &out, fsys, storetest.RootWithKeep)
	if vfs.Errno(err) != syscall.EISDIR || strings.Contains(err.Error(), "\n") {
		t.Errorf("cat of a directory: %v, want one line with EISDIR", err)
	}
	err = runCat(t.Context(), &out, fsys, "00000000000000000000000000000000-nope")
	if vfs.Errno(err) != syscall.ENOENT {
		t.Errorf("cat of a missing path: %v", err)
	}
}

func TestStat(t *testing.T) {
	fsys := fixtureVFS(t)
	var out bytes.Buffer
	if err := runStat(t.Context(), &out, fsys, storetest.RootWithKeep, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"type: directory", "mode: dr-xr-xr-x (0555)", "size: 2", "digest: blake3-i1tdZCtka7jtUEsIYsOUE+h+V0kUl9570HWVP3uDgQ4="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stat output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := runStat(t.Context(), &out, fsys, storetest.RootSymlinkA, false); err != nil || !strings.Contains(out.String(), "target: "+storetest.RootBlobA) {
		t.Errorf("stat symlink: %v\n%s", err, out.String())
	}
}

package ninep_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/protocols/ninep"
)

// runTool runs one of diod's client tools. The deadline only keeps a hung
// server from hanging the test; it asserts nothing about speed.
func runTool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// lsNames returns the names and mode strings of `diodls -l` output.
func lsNames(out []byte) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			m[f[len(f)-1]] = f[0]
		}
	}
	return m
}

// TestDiodTools lists and reads an imported tree with diod's 9P2000.L
// client tools and compares it with the source tree.
func TestDiodTools(t *testing.T) {
	diodls := e2etest.NeedCommand(t, "diodls")
	diodcat := e2etest.NeedCommand(t, "diodcat")
	fsys, root, src := deepTree(t)
	_, addr := startServer(t, fsys, "tcp", ninep.Options{})

	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range ents {
		want = append(want, e.Name())
	}
	// The same directory through the store root (aname "/" and "") and
	// as the attached subtree (aname <hash>-tree).
	for _, args := range [][]string{{"-a", "/", root}, {"-a", "", root}, {"-a", root}} {
		got := lsNames(runTool(t, diodls, append([]string{"-l", "-s", addr}, args...)...))
		var names []string
		for n := range got {
			if n != "." && n != ".." {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("diodls %v: %d names, want %d: %v", args, len(names), len(want), names)
		}
		for name, mode := range map[string]string{"run.sh": "-r-xr-xr-x", "big.bin": "-r--r--r--", "d0": "dr-xr-xr-x"} {
			if !strings.HasPrefix(got[name], mode) {
				t.Errorf("diodls %v: %s has mode %q, want %s", args, name, got[name], mode)
			}
		}
	}

	deep := filepath.Join(root, "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/deep.txt")
	for _, f := range []struct{ aname, path, src string }{
		{"/", root + "/big.bin", "big.bin"},
		{root, "big.bin", "big.bin"},
		{"", root + "/run.sh", "run.sh"},
		{"/", root + "/f007-xxxxxxx", "f007-xxxxxxx"},
		{"/", deep, "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/deep.txt"},
		{"/", root + "/d0/../run.sh", "run.sh"}, // diod serves "." and ".." in a path
		{root, "./d0/d1/../../big.bin", "big.bin"},
		{root, "../big.bin", "big.bin"}, // never above the attach root
	} {
		wantData, err := os.ReadFile(filepath.Join(src, f.src))
		if err != nil {
			t.Fatal(err)
		}
		for _, msize := range []string{"65536", "1048576"} {
			got := runTool(t, diodcat, "-m", msize, "-s", addr, "-a", f.aname, f.path)
			if !bytes.Equal(got, wantData) {
				t.Errorf("diodcat -m %s -a %q %s: %d bytes, want the %d of %s", msize, f.aname, f.path, len(got), len(wantData), f.src)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
)

// nixOut runs a Nix command and returns its trimmed standard output.
func nixOut(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = e2etest.NixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// lsRoot lists the root of the store at dir with storefs ls.
func lsRoot(t *testing.T, dir string) []string {
	t.Helper()
	out, err := runCommand(t, "--store", "local:"+dir, "ls")
	if err != nil {
		t.Fatalf("ls: %v: %s", err, out)
	}
	names := strings.Fields(out)
	slices.Sort(names)
	return names
}

func TestCopyFromNixCache(t *testing.T) {
	for _, c := range []string{"nix-store", "nix-build", "nix"} {
		e2etest.NeedCommand(t, c)
	}
	if os.Geteuid() != 0 {
		e2etest.Missing(t, "the Nix tests run single-user Nix as root")
	}
	w := t.TempDir()
	tree := filepath.Join(w, "storefs-copy-tree")
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "bin", "tool"), []byte("#!/bin/sh\necho tool\n"), 0o755)
	os.WriteFile(filepath.Join(tree, "README"), []byte("copy me\n"), 0o644)
	os.Symlink("bin/tool", filepath.Join(tree, "link"))
	ca := nixOut(t, "nix-store", "--add", tree)
	drv := filepath.Join(w, "ia.nix")
	os.WriteFile(drv, []byte(`derivation { name = "storefs-copy-ia"; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ "-c" "echo uses ${builtins.storePath "`+ca+`"}/bin/tool > $out" ]; }`), 0o644)
	ia := nixOut(t, "nix-build", "--no-out-link", "--option", "sandbox", "false", drv)
	closure := strings.Fields(nixOut(t, "nix", "path-info", "-r", ia))
	var want []string
	for _, p := range closure {
		want = append(want, filepath.Base(p))
	}
	slices.Sort(want)
	sk, pk := filepath.Join(w, "sk"), filepath.Join(w, "pk")
	nixOut(t, "nix-store", "--generate-binary-cache-key", "storefs-copy-1", sk, pk)
	keyBytes, _ := os.ReadFile(pk)
	key := strings.TrimSpace(string(keyBytes))
	cache := filepath.Join(w, "cache")
	nixOut(t, "nix", "copy", "--to", "file://"+cache+"?compression=zstd&secret-key="+sk, ia)

	t.Run("copy and ls", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "store")
		out, err := runCommand(t, "--store", "local:"+dst, "copy", "--progress", "plain", "--trusted-public-keys", key, "file://"+cache, ia)
		if err != nil {
			t.Fatalf("copy: %v: %s", err, out)
		}
		if n := strings.Count(out, "copied "); n != len(closure) {
			t.Errorf("copy printed %d 'copied' lines for %d paths:\n%s", n, len(closure), out)
		}
		if got := lsRoot(t, dst); !slices.Equal(got, want) {
			t.Errorf("storefs ls after copy = %v, nix path-info -r = %v", got, want)
		}
		got, err := runCommand(t, "--store", "local:"+dst, "cat", ca+"/bin/tool")
		if wantB, _ := os.ReadFile(ca + "/bin/tool"); err != nil || got != string(wantB) {
			t.Errorf("cat bin/tool = %q, %v; want %q", got, err, wantB)
		}
		// Again: everything is present, nothing is fetched.
		out, err = runCommand(t, "--store", "local:"+dst, "copy", "--progress", "plain", "nix+file://"+cache+"?trusted-public-keys="+key, ia)
		if err != nil || strings.Count(out, "present ") != len(closure) || strings.Contains(out, "copied ") {
			t.Errorf("second copy: %v:\n%s", err, out)
		}
	})
	t.Run("resume", func(t *testing.T) {
		// A cache whose input-addressed NAR is damaged: the copy fails
		// after the CA path, leaving no PathInfo for the damaged one.
		bad := filepath.Join(t.TempDir(), "bad")
		if err := os.CopyFS(bad, os.DirFS(cache)); err != nil {
			t.Fatal(err)
		}
		nis, _ := os.ReadFile(filepath.Join(bad, strings.SplitN(filepath.Base(ia), "-", 2)[0]+".narinfo"))
		for l := range strings.Lines(string(nis)) {
			if u, ok := strings.CutPrefix(strings.TrimSpace(l), "URL: "); ok {
				os.Chmod(filepath.Join(bad, u), 0o644)
				os.WriteFile(filepath.Join(bad, u), []byte("not zstd at all"), 0o644)
			}
		}
		dst := filepath.Join(t.TempDir(), "store")
		out, err := runCommand(t, "--store", "local:"+dst, "copy", "--progress", "plain", "--trusted-public-keys", key, "file://"+bad, ia)
		if err == nil {
			t.Fatalf("copy from a damaged cache succeeded:\n%s", out)
		}
		if got := lsRoot(t, dst); !slices.Equal(got, []string{filepath.Base(ca)}) {
			t.Errorf("after the failed copy the store has %v, want only %s", got, filepath.Base(ca))
		}
		out, err = runCommand(t, "--store", "local:"+dst, "copy", "--progress", "plain", "--trusted-public-keys", key, "file://"+cache, ia)
		if err != nil || !strings.Contains(out, "present "+ca) || !strings.Contains(out, "copied  "+ia) {
			t.Errorf("resumed copy: %v:\n%s", err, out)
		}
		if got := lsRoot(t, dst); !slices.Equal(got, want) {
			t.Errorf("after resuming: %v, want %v", got, want)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "store")
		wrong := "storefs-copy-1:" + strings.Repeat("A", 43) + "="
		out, err := runCommand(t, "--store", "local:"+dst, "copy", "--progress", "none", "--trusted-public-keys", wrong, "file://"+cache, ia)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("copy with a wrong key: %v:\n%s", err, out)
		}
	})
	t.Run("store to store", func(t *testing.T) {
		// From the store the first copy filled into another: a storefs
		// store URL as the source.
		src := filepath.Join(t.TempDir(), "src")
		if out, err := runCommand(t, "--store", "local:"+src, "copy", "--progress", "none", "file://"+cache, ia); err != nil {
			t.Fatalf("copy: %v: %s", err, out)
		}
		dst := filepath.Join(t.TempDir(), "dst")
		out, err := runCommand(t, "--store", "local:"+dst, "copy", "--progress", "plain", "--trusted-public-keys", key, "local:"+src, filepath.Base(ia))
		if err != nil {
			t.Fatalf("copy local:src: %v:\n%s", err, out)
		}
		if got := lsRoot(t, dst); !slices.Equal(got, want) {
			t.Errorf("after store-to-store copy: %v, want %v", got, want)
		}
	})
}

func TestCopyBetweenStores(t *testing.T) {
	// Real NAR hashes: paths made by storefs import (the storetest
	// fixtures carry made-up ones, which copy rightly rejects).
	w := t.TempDir()
	src := filepath.Join(w, "src")
	tree := filepath.Join(w, "tree")
	os.MkdirAll(filepath.Join(tree, "d", "e"), 0o755)
	os.WriteFile(filepath.Join(tree, "d", "e", "f"), bytes.Repeat([]byte("x"), 3<<20), 0o644)
	os.WriteFile(filepath.Join(tree, "exe"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("d/e/f", filepath.Join(tree, "l"))
	single := filepath.Join(w, "single")
	os.WriteFile(single, []byte("one file"), 0o644)
	out, err := runCommand(t, "--store", "local:"+src, "import", tree, single)
	if err != nil {
		t.Fatalf("import: %v: %s", err, out)
	}
	all := strings.Fields(out)
	dst := filepath.Join(w, "dst")
	out, err = runCommand(t, append([]string{"--store", "local:" + dst, "copy", "--progress", "plain", "local:" + src}, all...)...)
	if err != nil {
		t.Fatalf("copy: %v:\n%s", err, out)
	}
	if got, want := lsRoot(t, dst), lsRoot(t, src); !slices.Equal(got, want) {
		t.Errorf("copied store lists %v, source %v", got, want)
	}
	if out, err := runCommand(t, "--store", "local:"+dst, "verify"); err != nil {
		t.Errorf("verify of the copy: %v:\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"local:" + src, "not-a-store-path"},
		{"local:" + src, "/nix/store/00000000000000000000000000000000-missing"},
		{"nix+ftp://x", all[0]},
		{"--progress", "loud", "local:" + src, all[0]},
	} {
		if out, err := runCommand(t, append([]string{"--store", "local:" + dst, "copy"}, bad...)...); err == nil {
			t.Errorf("copy %v succeeded:\n%s", bad, out)
		}
	}

	// A source whose PathInfo lies about the NAR hash is rejected.
	s, err := local.Open(context.Background(), src, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := storeclient.ParseStorePath(all[1])
	p, err := s.GetPathInfo(context.Background(), sp.Digest)
	if err != nil {
		t.Fatal(err)
	}
	p.NarSHA256[0] ^= 1
	if err := s.PutPathInfo(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	s.Close()
	dst2 := filepath.Join(w, "dst2")
	if out, err := runCommand(t, "--store", "local:"+dst2, "copy", "local:"+src, all[1]); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("copy of a path with a wrong NAR hash: %v:\n%s", err, out)
	}
	if got := lsRoot(t, dst2); len(got) != 0 {
		t.Errorf("a rejected copy left %v", got)
	}
}

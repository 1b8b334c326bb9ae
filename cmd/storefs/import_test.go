package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	if err := os.WriteFile(hello, []byte("Hello World!"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &globalOptions{store: "local:" + filepath.Join(dir, "store")}
	run := func(o *importOptions, args ...string) (string, error) {
		var out bytes.Buffer
		err := runImport(t.Context(), g, o, args, strings.NewReader(""), &out)
		return out.String(), err
	}
	// The path real Nix 2.8 prints for `nix-store --add hello` (vectors).
	const want = "/nix/store/n4hss129xrln71w0nss39bcx6hzsh9bg-hello\n"
	got, err := run(&importOptions{jobs: 2}, hello, hello)
	if err != nil || got != want+want {
		t.Fatalf("import hello hello = %q, %v; want %q twice", got, err, want)
	}
	if got, err := run(&importOptions{jobs: 1, name: "renamed"}, hello); err != nil || !strings.HasSuffix(got, "-renamed\n") {
		t.Fatalf("import --name renamed = %q, %v", got, err)
	}
	for name, o := range map[string]*importOptions{
		"--name with two paths": {jobs: 1, name: "x"},
		"-j 0":                  {jobs: 0},
		"--nar and paths":       {jobs: 1, nar: hello},
	} {
		if _, err := run(o, hello, hello); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := run(&importOptions{jobs: 1}); err == nil {
		t.Error("import without arguments accepted")
	}
	if _, err := run(&importOptions{jobs: 1, nar: "-"}); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Errorf("--nar - without --name = %v, want an error asking for --name", err)
	}
}

func TestNARName(t *testing.T) {
	for in, want := range map[string]string{"/x/foo.nar.xz": "foo", "foo.nar.zst": "foo", "foo.nar": "foo", "foo": "foo", "-": ""} {
		if got := narName(in); got != want {
			t.Errorf("narName(%q) = %q, want %q", in, got, want)
		}
	}
}

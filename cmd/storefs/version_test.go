package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestVersionListsFrontends(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"storefs ", "go: go", "fuse", "nfs3", "9p2000.L", "virtiofs", "grpc"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
}

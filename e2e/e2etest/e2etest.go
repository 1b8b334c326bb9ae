// Package e2etest decides whether tests that need a real peer (a program
// such as nix-store or nfs-cat, /dev/fuse, qemu) run, skip or fail.
//
// Without STOREFS_E2E=1 a missing peer skips the test with the reason, so
// `go test ./...` passes on a machine with only Go. With STOREFS_E2E=1 (set
// by .ci/run) a missing peer fails the test: a green CI means it really ran.
package e2etest

import (
	"os"
	"os/exec"
	"testing"
)

// Enabled reports whether STOREFS_E2E=1 is set.
func Enabled() bool { return os.Getenv("STOREFS_E2E") == "1" }

// Missing skips t, or fails it under STOREFS_E2E=1, because a peer is
// missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Enabled() {
		t.Fatalf("STOREFS_E2E=1 but "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedCommand returns the path of the program name, or skips/fails t when
// it is not installed.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (%v)", name, err)
	}
	return p
}

// NeedFUSE skips/fails t unless /dev/fuse can be opened and fusermount3 or
// the process is root.
func NeedFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		Missing(t, "/dev/fuse is not usable: %v", err)
		return
	}
	f.Close()
}

// NixEnv returns the environment for running Nix 2.8 as root without a
// daemon, build users or network access (peers.md). Add
// "--store local?root=DIR" to a command to keep its store out of /nix.
func NixEnv() []string {
	return append(os.Environ(),
		"NIX_CONFIG=build-users-group =\nexperimental-features = nix-command\nsubstituters =\nsandbox = false")
}

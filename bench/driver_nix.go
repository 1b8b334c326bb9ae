package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// nixEnv is the environment for Nix 2.8 as root without a daemon, build
// users or network (spec/peers.md).
func nixEnv() []string {
	return append(os.Environ(),
		"NIX_CONFIG=build-users-group =\nexperimental-features = nix-command\nsubstituters =\nsandbox = false")
}

// nixAvailable returns why nix-store cannot be used, or "".
func nixAvailable() string {
	if _, err := exec.LookPath("nix-store"); err != nil {
		return "nix-store is not installed"
	}
	return ""
}

// nixAdd runs `nix-store --add path` into a fresh chroot store rooted at
// storeRoot and returns the store path it prints.
func nixAdd(ctx context.Context, storeRoot, path string) (string, error) {
	cmd := exec.CommandContext(ctx, "nix-store", "--store", "local?root="+storeRoot, "--add", path)
	cmd.Env = nixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nix-store --add %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

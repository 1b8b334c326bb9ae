package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// catFile runs `cat path > /dev/null`: the plain-file reference for reads.
func catFile(ctx context.Context, path string) error {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.CommandContext(ctx, "cat", path)
	cmd.Stdout = devnull
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cat %s: %w: %s", path, err, stderr.String())
	}
	return nil
}

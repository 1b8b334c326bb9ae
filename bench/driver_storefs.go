package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/local"
)

// storefsImport runs `storefs --store local:storeDir import path` and
// returns the store path it prints.
func storefsImport(ctx context.Context, env *Env, storeDir, path string) (string, error) {
	cmd := exec.CommandContext(ctx, env.Storefs, "--store", "local:"+storeDir, "import", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("storefs import %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// storefsBlobRead reads the content blob of a file store path from the
// local store in storeDir, in 1 MiB ReadAt calls, and returns its length.
// With verify it also checks the BLAKE3 digest, as a frontend does before
// serving data from an untrusted store.
func storefsBlobRead(ctx context.Context, storeDir, storePath string, verify bool) (int64, error) {
	s, err := local.Open(ctx, storeDir, local.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	sp, err := storeclient.ParseStorePath(storePath)
	if err != nil {
		return 0, err
	}
	info, err := s.GetPathInfo(ctx, sp.Digest)
	if err != nil {
		return 0, err
	}
	if info.Node.Kind() != storeclient.KindFile {
		return 0, fmt.Errorf("%s is a %s, not a file", storePath, info.Node.Kind())
	}
	br, err := s.OpenBlob(ctx, info.Node.Digest())
	if err != nil {
		return 0, err
	}
	defer br.Close()
	h := storeclient.NewHasher()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := br.ReadAt(buf, off)
		if verify {
			h.Write(buf[:n])
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, err
		}
	}
	if off != br.Size() {
		return off, fmt.Errorf("read %d bytes of a %d-byte blob", off, br.Size())
	}
	if verify && storeclient.Digest(h.Sum(nil)) != info.Node.Digest() {
		return off, fmt.Errorf("blob %s does not match its digest", info.Node.Digest())
	}
	return off, nil
}

// storefsImportInProcess imports path with the importer package directly,
// into a local store opened with NoSync (no fsync of blobs, Directories
// and the database; nix-store --add syncs only its SQLite database). It
// separates the importer's own cost from the durability cost of the local
// store.
func storefsImportInProcess(ctx context.Context, storeDir, path string) (string, error) {
	s, err := local.Open(ctx, storeDir, local.Options{NoSync: true})
	if err != nil {
		return "", err
	}
	defer s.Close()
	info, err := importer.ImportPath(ctx, s, path, importer.Options{})
	if err != nil {
		return "", err
	}
	return info.StorePath.Absolute(), nil
}

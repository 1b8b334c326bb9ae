package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// blobReadWorkload reads the corpus's big file: from a local store's blob
// (storefs, in process, with and without BLAKE3 verification) against cat
// of the same file on disk.
func blobReadWorkload() Workload {
	return Workload{
		Name: "blobread",
		Doc:  "read the big file: local-store blob vs cat from disk",
		Run:  runBlobReadWorkload,
	}
}

func runBlobReadWorkload(ctx context.Context, env *Env) ([]Result, error) {
	big := env.Corpus.BigFile
	if big == "" {
		return nil, errors.New("the corpus has no big file (--big-size 0)")
	}
	size := env.Corpus.Bytes
	if st, err := fileSize(big); err == nil {
		size = st
	}
	storeDir := filepath.Join(env.Scratch, "blobread")
	storePath, err := storefsImport(ctx, env, storeDir, big)
	if err != nil {
		return nil, err
	}
	read := func(verify bool) func(context.Context, string) (string, error) {
		return func(ctx context.Context, _ string) (string, error) {
			n, err := storefsBlobRead(ctx, storeDir, storePath, verify)
			if err == nil && n != size {
				err = errors.New("blob length differs from the file's")
			}
			return "", err
		}
	}
	cs := []contender{
		{name: "cat FILE > /dev/null", peer: true, run: func(ctx context.Context, _ string) (string, error) {
			return "", catFile(ctx, big)
		}},
		{name: "storefs blob ReadAt (local store)", run: read(false)},
		{name: "storefs blob ReadAt + BLAKE3 verify", run: read(true)},
	}
	// Both read warm: the corpus is in the page cache since it was
	// generated, and the import writes big blobs past the page cache
	// (O_DIRECT), so each system reads once untimed first.
	for _, c := range cs {
		if _, err := c.run(ctx, ""); err != nil {
			return nil, fmt.Errorf("%s (warm-up): %w", c.name, err)
		}
	}
	walls, _, err := runContenders(ctx, env, cs)
	if err != nil {
		return nil, err
	}
	var results []Result
	for i, c := range cs {
		results = append(results, walls[i].result("blobread", c.name, c.peer, size, 1))
	}
	return results, nil
}

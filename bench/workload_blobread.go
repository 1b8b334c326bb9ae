package main

import (
	"context"
	"errors"
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
	base := Result{Workload: "blobread", Bytes: size, Files: 1}

	cat := base
	cat.System, cat.Peer = "cat FILE > /dev/null", true
	if cat.Wall, err = timeBest(env, nil, func() error { return catFile(ctx, big) }); err != nil {
		return nil, err
	}
	read := func(verify bool) func() error {
		return func() error {
			n, err := storefsBlobRead(ctx, storeDir, storePath, verify)
			if err == nil && n != size {
				err = errors.New("blob length differs from the file's")
			}
			return err
		}
	}
	raw := base
	raw.System = "storefs blob ReadAt (local store)"
	if raw.Wall, err = timeBest(env, nil, read(false)); err != nil {
		return nil, err
	}
	verified := base
	verified.System = "storefs blob ReadAt + BLAKE3 verify"
	if verified.Wall, err = timeBest(env, nil, read(true)); err != nil {
		return nil, err
	}
	return []Result{cat, raw, verified}, nil
}

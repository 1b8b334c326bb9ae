package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// importWorkload adds the whole corpus to a fresh store: storefs import
// into a new local store against nix-store --add into a new chroot Nix
// store. Both must print the same store path.
func importWorkload() Workload {
	return Workload{
		Name: "import",
		Doc:  "add the corpus tree to a fresh store",
		Run:  runImportWorkload,
	}
}

func runImportWorkload(ctx context.Context, env *Env) ([]Result, error) {
	tree := env.Corpus.Root
	base := Result{Workload: "import", Bytes: env.Corpus.Bytes, Files: env.Corpus.Files}
	var results []Result
	var paths []string

	// Each run gets a fresh store, removed (untimed) before the next.
	fresh := func(name string) (string, func() error) {
		dir := filepath.Join(env.Scratch, name)
		return dir, func() error { return os.RemoveAll(dir) }
	}

	nix := base
	nix.System, nix.Peer = "nix-store --add (Nix 2.8, chroot store)", true
	if why := nixAvailable(); why != "" {
		nix.Skipped = why
	} else {
		dir, reset := fresh("nix")
		var got string
		wall, err := timeBest(env, reset, func() (err error) {
			got, err = nixAdd(ctx, dir, tree)
			return err
		})
		if err != nil {
			return nil, err
		}
		reset()
		nix.Wall = wall
		paths = append(paths, got)
	}
	results = append(results, nix)

	sf := base
	sf.System = "storefs import (local store)"
	dir, reset := fresh("storefs")
	var got string
	wall, err := timeBest(env, reset, func() (err error) {
		got, err = storefsImport(ctx, env, dir, tree)
		return err
	})
	if err != nil {
		return nil, err
	}
	reset()
	sf.Wall = wall
	paths = append(paths, got)
	results = append(results, sf)

	for _, v := range []struct {
		system string
		dir    string
	}{
		{"storefs importer in process (local store, NoSync)", filepath.Join(env.Scratch, "nosync")},
	} {
		r := base
		r.System = v.system
		reset := func() error { return os.RemoveAll(v.dir) }
		wall, err := timeBest(env, reset, func() (err error) {
			got, err = storefsImportInProcess(ctx, v.dir, tree)
			return err
		})
		if err != nil {
			return nil, err
		}
		os.RemoveAll(v.dir)
		r.Wall = wall
		paths = append(paths, got)
		results = append(results, r)
	}

	for _, p := range paths[1:] {
		if p != paths[0] {
			return nil, fmt.Errorf("store paths differ: %s and %s", paths[0], p)
		}
	}
	env.Log.Info("import", "store_path", paths[0])
	return results, nil
}

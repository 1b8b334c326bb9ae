package main

import (
	"context"
	"fmt"
)

// importWorkload adds the whole corpus to a fresh store: storefs import
// into a new local store against nix-store --add into a new chroot Nix
// store. All must print the same store path.
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
	var cs []contender
	var results []Result
	nix := base
	nix.System, nix.Peer = "nix-store --add (Nix 2.8, chroot store)", true
	if why := nixAvailable(); why != "" {
		nix.Skipped = why
	} else {
		cs = append(cs, contender{name: nix.System, peer: true, run: func(ctx context.Context, dir string) (string, error) {
			return nixAdd(ctx, dir, tree)
		}})
	}
	cs = append(cs,
		contender{name: "storefs import (local store)", run: func(ctx context.Context, dir string) (string, error) {
			return storefsImport(ctx, env, dir, tree)
		}},
		contender{name: "storefs importer in process (local store, NoSync)", run: func(ctx context.Context, dir string) (string, error) {
			return storefsImportInProcess(ctx, dir, tree)
		}},
	)
	walls, paths, err := runContenders(ctx, env, cs)
	if err != nil {
		return nil, err
	}
	if nix.Skipped != "" {
		results = append(results, nix)
	}
	for i, c := range cs {
		r := base
		r.System, r.Peer, r.Wall = c.name, c.peer, walls[i]
		results = append(results, r)
		if paths[i] != paths[0] {
			return nil, fmt.Errorf("store paths differ: %s prints %s, %s prints %s", cs[0].name, paths[0], c.name, paths[i])
		}
	}
	env.Log.Info("import", "store_path", paths[0])
	return results, nil
}

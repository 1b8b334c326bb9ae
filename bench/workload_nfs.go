package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/storefs/storefs/protocols/nfs"
)

// nfsWorkload reads the corpus over NFSv3 with libnfs, from storefs
// (protocols/nfs over a local store holding the imported corpus) and from
// the peer servers exporting the same tree from disk: nfs-cat of the big
// file (warm: the corpus is in the page cache, and every system serves it
// once untimed first) and nfs-ls -R of the small-file part of the tree.
// nfs-ganesha is the peer; rclone serve nfs (go-nfs) runs when an rclone
// binary is on PATH. Peers that are not installed are skipped.
func nfsWorkload() Workload {
	return Workload{
		Name: "nfs",
		Doc:  "libnfs nfs-cat of the big file and nfs-ls -R of the tree: storefs vs nfs-ganesha (and rclone)",
		Run:  runNFSWorkload,
	}
}

func runNFSWorkload(ctx context.Context, env *Env) ([]Result, error) {
	for _, tool := range []string{"nfs-cat", "nfs-ls"} {
		if _, err := exec.LookPath(tool); err != nil {
			return []Result{{Workload: "nfs", System: "all", Skipped: tool + " (libnfs-utils) is not installed"}}, nil
		}
	}
	tree := env.Corpus.Root
	storeDir := filepath.Join(env.Scratch, "nfs-store")
	storePath, err := storefsImport(ctx, env, storeDir, tree)
	if err != nil {
		return nil, err
	}
	var servers []*nfsServer
	var results []Result
	starters := []struct {
		name  string
		peer  bool
		start func() (*nfsServer, error)
	}{
		{"nfs-ganesha 4.3 (FSAL VFS)", true, func() (*nfsServer, error) { return startGanesha(ctx, env, tree) }},
		{"storefs (protocols/nfs)", false, func() (*nfsServer, error) {
			return startStorefsNFS(ctx, env, "storefs (protocols/nfs)", storeDir, storePath, nfs.Options{})
		}},
		// The same server with sendfile(2) for this loopback client too
		// (by default loopback clients get copied reads).
		{"storefs (protocols/nfs, sendfile to loopback)", false, func() (*nfsServer, error) {
			return startStorefsNFS(ctx, env, "storefs (protocols/nfs, sendfile to loopback)", storeDir, storePath, nfs.Options{Sendfile: nfs.SendfileAlways})
		}},
		{"rclone serve nfs (go-nfs)", false, func() (*nfsServer, error) { return startRclone(ctx, tree) }},
	}
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for _, st := range starters {
		s, err := st.start()
		var skip skipError
		if errors.As(err, &skip) {
			for _, w := range []string{"nfs-cat big", "nfs-ls -R"} {
				results = append(results, Result{Workload: w, System: st.name, Peer: st.peer, Skipped: string(skip)})
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		servers = append(servers, s)
	}

	if big := env.Corpus.BigFile; big != "" {
		size, err := fileSize(big)
		if err != nil {
			return nil, err
		}
		var cs []contender
		for _, s := range servers {
			url := s.url(BigName)
			// The warm-up (untimed) reads through a pipe and checks the
			// length; the timed runs write to /dev/null.
			n, err := nfsCat(ctx, url)
			if err == nil && n != size {
				err = fmt.Errorf("nfs-cat wrote %d bytes, want %d", n, size)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			cs = append(cs, contender{name: s.name, peer: s.peer, run: func(ctx context.Context, _ string) (string, error) {
				return "", nfsCatNull(ctx, url)
			}})
		}
		walls, _, err := runContenders(ctx, env, cs)
		if err != nil {
			return nil, err
		}
		for i, c := range cs {
			results = append(results, walls[i].result("nfs-cat big", c.name, c.peer, size, 1))
		}
	}

	// The small files live in d000/…; list that directory tree.
	var cs []contender
	lines := make([]int, len(servers))
	for i, s := range servers {
		url := s.url("d000")
		n, err := nfsLsR(ctx, url) // warm-up, untimed
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		lines[i] = n
		cs = append(cs, contender{name: s.name, peer: s.peer, run: func(ctx context.Context, _ string) (string, error) {
			_, err := nfsLsR(ctx, url)
			return "", err
		}})
	}
	walls, _, err := runContenders(ctx, env, cs)
	if err != nil {
		return nil, err
	}
	for i, c := range cs {
		if lines[i] != lines[0] {
			env.Log.Warn("nfs-ls -R listed a different number of entries", "system", c.name, "lines", lines[i], "first", lines[0])
		}
		results = append(results, walls[i].result("nfs-ls -R", c.name, c.peer, 0, lines[i]))
	}
	return results, nil
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/vfs"
)

// mountOptions are the flags of `storefs mount`.
type mountOptions struct {
	listRoot   bool
	allowOther bool
	owner      string
	force      bool
	debug      bool
}

func newMountCommand(g *globalOptions) *cobra.Command {
	o := &mountOptions{}
	cmd := &cobra.Command{
		Use:   "mount [--list-root] [--allow-other] MOUNTPOINT",
		Short: "Mount the store read-only with FUSE, in the foreground",
		Long: `mount serves the store on MOUNTPOINT (an existing empty directory) through
the kernel's FUSE until SIGINT or SIGTERM, or until the mount is unmounted from
outside (umount, fusermount3 -u); then it exits 0 with nothing left mounted.
The store is opened read-only. See docs/fuse.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.listRoot, "list-root", false, "allow listing the store root (default: lookups by name only)")
	f.BoolVar(&o.allowOther, "allow-other", false, "let other users use the mount (non-root: needs user_allow_other in /etc/fuse.conf)")
	f.StringVar(&o.owner, "owner", "", "UID[:GID] that owns every node (default 0:0, as in /nix/store)")
	f.BoolVar(&o.force, "force", false, "clear a stale mount (\"transport endpoint is not connected\") at MOUNTPOINT first")
	f.BoolVar(&o.debug, "debug-fuse", false, "log every FUSE request and reply (with --log-level debug)")
	return cmd
}

// runMount mounts the store on dir and serves it until ctx ends (SIGINT,
// SIGTERM) or the mount goes away.
func runMount(ctx context.Context, g *globalOptions, o *mountOptions, dir string) error {
	uid, gid, err := parseOwner(o.owner)
	if err != nil {
		return err
	}
	s, err := g.openStore(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	log := slog.Default()
	fsys, err := vfs.New(s, vfs.Options{ListRoot: o.listRoot, UID: uid, GID: gid, Logger: log})
	if err != nil {
		return err
	}
	opts := fuse.MountOptions{Options: fuse.Options{Logger: log}, AllowOther: o.allowOther, Force: o.force, Debug: o.debug}
	srv, err := fuse.Mount(dir, fsys, opts)
	if err != nil {
		return err
	}
	log.Info("mounted", "dir", srv.Dir())
	select {
	case <-ctx.Done():
		log.Info("unmounting", "dir", srv.Dir())
		return srv.Unmount()
	case <-srv.Done():
		log.Info("unmounted from outside", "dir", srv.Dir())
		return nil
	}
}

// parseOwner parses UID[:GID]; GID defaults to UID, "" to 0:0.
func parseOwner(s string) (uid, gid uint32, err error) {
	if s == "" {
		return 0, 0, nil
	}
	us, gs, hasGID := strings.Cut(s, ":")
	u, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("--owner %q: want UID[:GID] as numbers", s)
	}
	g := u
	if hasGID {
		if g, err = strconv.ParseUint(gs, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("--owner %q: want UID[:GID] as numbers", s)
		}
	}
	return uint32(u), uint32(g), nil
}

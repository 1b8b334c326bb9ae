package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/vfs"
)

// The read commands (cli.md): ls, cat and stat go through vfs exactly as a
// mount would, so they show what every frontend shows. PATH is relative to
// the store root (`<hash>-hello/bin/hello`); a leading /nix/store/ is
// accepted too. The root can be listed (list_root is on for the CLI).

func newLsCommand(g *globalOptions) *cobra.Command {
	var long bool
	cmd := &cobra.Command{
		Use:   "ls [-l] [PATH]",
		Short: "List a directory of the store (the store root without PATH)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := ""
			if len(args) == 1 {
				p = args[0]
			}
			return withVFS(cmd.Context(), g, func(fsys *vfs.FS) error {
				return runLs(cmd.Context(), cmd.OutOrStdout(), fsys, p, long)
			})
		},
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "long format: mode, links, owner, size, name, symlink target")
	return cmd
}

func newCatCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cat PATH",
		Short: "Write a file of the store to standard output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withVFS(cmd.Context(), g, func(fsys *vfs.FS) error {
				return runCat(cmd.Context(), cmd.OutOrStdout(), fsys, args[0])
			})
		},
	}
}

func newStatCommand(g *globalOptions) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "stat PATH",
		Short: "Show the attributes and identity of a node of the store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withVFS(cmd.Context(), g, func(fsys *vfs.FS) error {
				return runStat(cmd.Context(), cmd.OutOrStdout(), fsys, args[0], follow)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "dereference", "L", false, "follow a final symlink")
	return cmd
}

// withVFS opens the store read-only and runs fn over a vfs of it.
func withVFS(ctx context.Context, g *globalOptions, fn func(*vfs.FS) error) error {
	s, err := g.openStore(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	fsys, err := newCLIVFS(s)
	if err != nil {
		return err
	}
	return fn(fsys)
}

// newCLIVFS returns the vfs the read commands use: defaults, with the root
// listable.
func newCLIVFS(s storeclient.Store) (*vfs.FS, error) {
	return vfs.New(s, vfs.Options{ListRoot: true})
}

// storeRelative strips /nix/store/ from a path given as an absolute store
// path.
func storeRelative(p string) string {
	if rest, ok := strings.CutPrefix(p, storeclient.StoreDir+"/"); ok {
		return rest
	}
	if p == storeclient.StoreDir {
		return ""
	}
	return p
}

// cliError makes one clear line of a vfs error: the path and what went
// wrong, with the cause only when it helps (I/O errors).
func cliError(op, p string, err error) error {
	en := vfs.Errno(err)
	if en == syscall.EIO {
		return fmt.Errorf("%s %s: %w", op, p, err)
	}
	return fmt.Errorf("%s %s: %w", op, p, en)
}

func runLs(ctx context.Context, w io.Writer, fsys *vfs.FS, p string, long bool) error {
	n, err := fsys.Walk(ctx, storeRelative(p), true)
	if err != nil {
		return cliError("ls", p, err)
	}
	if !n.IsDir() {
		name := p[strings.LastIndexByte(p, '/')+1:]
		return lsLine(w, fsys, name, n, long)
	}
	var cookie uint64
	for {
		es, err := fsys.ReadDir(ctx, n, cookie, 1024)
		if err != nil {
			return cliError("ls", p, err)
		}
		if len(es) == 0 {
			return nil
		}
		for _, e := range es {
			if err := lsLine(w, fsys, e.Name, e.Node, long); err != nil {
				return err
			}
		}
		cookie = es[len(es)-1].Cookie
	}
}

func lsLine(w io.Writer, fsys *vfs.FS, name string, n vfs.Node, long bool) error {
	if !long {
		_, err := fmt.Fprintln(w, name)
		return err
	}
	a := fsys.Attr(n)
	line := fmt.Sprintf("%s %d %d %d %d %s", a.Mode, a.Nlink, a.UID, a.GID, a.Size, name)
	if t, err := fsys.Readlink(n); err == nil {
		line += " -> " + t
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func runCat(ctx context.Context, w io.Writer, fsys *vfs.FS, p string) error {
	n, err := fsys.Walk(ctx, storeRelative(p), true)
	if err != nil {
		return cliError("cat", p, err)
	}
	f, err := fsys.Open(ctx, n)
	if err != nil {
		return cliError("cat", p, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		k, err := f.ReadAt(buf, off)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
			off += int64(k)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return cliError("cat", p, err)
		}
	}
}

func runStat(ctx context.Context, w io.Writer, fsys *vfs.FS, p string, follow bool) error {
	n, err := fsys.Walk(ctx, storeRelative(p), follow)
	if err != nil {
		return cliError("stat", p, err)
	}
	a := fsys.Attr(n)
	kind := "directory"
	switch {
	case a.Mode&fs.ModeSymlink != 0:
		kind = "symlink"
	case a.Mode.IsRegular() && a.Mode&0o111 != 0:
		kind = "executable file"
	case a.Mode.IsRegular():
		kind = "regular file"
	}
	fmt.Fprintf(w, "  path: %s\n", p)
	fmt.Fprintf(w, "  type: %s\n", kind)
	fmt.Fprintf(w, "  mode: %v (%04o)\n", a.Mode, a.Mode.Perm())
	fmt.Fprintf(w, "  size: %d\n", a.Size)
	fmt.Fprintf(w, "blocks: %d\n", a.Blocks)
	fmt.Fprintf(w, " inode: %d\n", a.Ino)
	fmt.Fprintf(w, " links: %d\n", a.Nlink)
	fmt.Fprintf(w, " owner: %d/%d\n", a.UID, a.GID)
	fmt.Fprintf(w, "handle: %x\n", n.Handle())
	if sn := n.StoreNode(); sn.Kind() == storeclient.KindDirectory || sn.Kind() == storeclient.KindFile {
		fmt.Fprintf(w, "digest: %s\n", sn.Digest())
	}
	if t, err := fsys.Readlink(n); err == nil {
		fmt.Fprintf(w, "target: %s\n", t)
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/storeclient/importer"
)

// importOptions are the flags of `storefs import`.
type importOptions struct {
	name string
	nar  string
	jobs int
}

func newImportCommand(g *globalOptions) *cobra.Command {
	o := &importOptions{}
	cmd := &cobra.Command{
		Use:   "import PATH... | import --nar FILE[.xz|.zst] [--name NAME]",
		Short: "Add files and directories (or a NAR) to the store like nix-store --add",
		Long: `import adds each PATH (a file, directory or symlink) to the store exactly as
nix-store --add adds it to a Nix store, and prints one store path per PATH,
byte-identical to what nix-store --add prints. A symlink is added as a
symlink, not followed. --name sets the store path name of a single PATH.

With --nar, import adds the NAR in FILE ("-" for standard input), plain or
compressed with xz, zstd or bzip2 (recognised by its content), and prints the store
path nix-store --add would give the unpacked tree. Its name is --name, or by
default FILE's base name without .nar, .xz and .zst.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd.Context(), g, o, args, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.name, "name", "", "store path name (a single PATH, or the NAR)")
	cmd.Flags().StringVar(&o.nar, "nar", "", "import this NAR file (plain, .xz or .zst; - for standard input) instead of PATHs")
	cmd.Flags().IntVarP(&o.jobs, "jobs", "j", runtime.GOMAXPROCS(0), "files read, hashed and stored at once")
	return cmd
}

func runImport(ctx context.Context, g *globalOptions, o *importOptions, args []string, stdin io.Reader, out io.Writer) error {
	switch {
	case o.nar != "" && len(args) > 0:
		return errors.New("import: give either --nar FILE or PATHs, not both")
	case o.nar == "" && len(args) == 0:
		return errors.New("import: nothing to import (give PATHs or --nar FILE)")
	case o.name != "" && len(args) > 1:
		return errors.New("import: --name needs a single PATH")
	case o.jobs < 1:
		return fmt.Errorf("import: -j must be at least 1, not %d", o.jobs)
	}
	s, err := g.openStore(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if o.nar != "" {
		name := o.name
		if name == "" {
			name = narName(o.nar)
		}
		if name == "" {
			return errors.New("import: --name is required with --nar -")
		}
		var r io.Reader = stdin
		if o.nar != "-" {
			f, err := os.Open(o.nar)
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			defer f.Close()
			r = f
		}
		info, err := importer.ImportNAR(ctx, s, r, name)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, info.StorePath.Absolute())
		return err
	}
	for _, p := range args {
		info, err := importer.ImportPath(ctx, s, p, importer.Options{Name: o.name, Parallelism: o.jobs})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(out, info.StorePath.Absolute()); err != nil {
			return err
		}
	}
	return nil
}

// narName is the default store path name of a NAR file: its base name
// without the .xz or .zst and .nar extensions.
func narName(file string) string {
	if file == "-" {
		return ""
	}
	n := filepath.Base(file)
	for _, ext := range []string{".xz", ".zst", ".nar"} {
		n = strings.TrimSuffix(n, ext)
	}
	return n
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/storeclient/local"
)

// verifier is a store that can check its own content: the embedded local
// store.
type verifier interface {
	Verify(ctx context.Context, report func(local.Problem)) (local.VerifyStats, error)
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every blob and Directory of the store and report corrupt or missing objects",
		Long: `verify re-hashes every blob and Directory in the store, checks that every
Directory's children and every store path's root content are present with the
recorded sizes, and prints one line per problem, then a summary. It exits 1 if
it found any problem. It opens the store read-only, so it can run next to a
mount of the same store.

A damaged metadata database is one problem line ("corrupt database meta.db: …");
the blobs are still checked. A blob quarantined by the daemon's scrubber (its
bytes no longer matched its digest) and not repaired yet is a "quarantined
blob" line: import the store paths that hold it again (or storefs copy them
from another store) to repair it. verify reports corrupt blobs but does not
quarantine them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
}

// runVerify verifies the store named by g and writes the report to out.
func runVerify(ctx context.Context, g *globalOptions, out io.Writer) error {
	s, err := g.openStore(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	v, ok := s.(verifier)
	if !ok {
		return fmt.Errorf("verify: not supported by the store %q (only the embedded local store can be verified)", g.store)
	}
	st, err := v.Verify(ctx, func(p local.Problem) {
		fmt.Fprintln(out, p)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "checked %d blobs (%s), %d directories, %d store paths in %s: %d problems\n",
		st.Blobs, formatBytes(st.BlobBytes), st.Directories, st.PathInfos, st.Duration.Round(1e6), st.Problems)
	if st.Problems > 0 {
		return &exitError{code: 1, err: fmt.Errorf("verify: %d problems found", st.Problems)}
	}
	return nil
}

// formatBytes formats n bytes with a binary unit, e.g. "1.0 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

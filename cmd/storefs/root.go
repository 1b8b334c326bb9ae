package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storeurl"
)

// globalOptions are the flags every command takes.
type globalOptions struct {
	store    string
	logLevel string
}

// exitError carries a specific exit status (e.g. verify's 1 for corruption)
// with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "storefs",
		Short:         "Serve a content-addressed Nix store as a read-only filesystem",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.setupLogging()
		},
	}
	root.PersistentFlags().StringVar(&g.store, "store", os.Getenv("STOREFS_STORE"),
		"store URL (local:DIR, memory:, …); default: the embedded store in $XDG_DATA_HOME/storefs (env STOREFS_STORE)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("STOREFS_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	root.AddCommand(newVersionCommand())
	root.AddCommand(newImportCommand(g))
	root.AddCommand(newCopyCommand(g))
	root.AddCommand(newVerifyCommand(g))
	root.AddCommand(newLsCommand(g), newCatCommand(g), newStatCommand(g))
	root.AddCommand(newServeCommand(g))
	root.AddCommand(newMountCommand(g))
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (g *globalOptions) setupLogging() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return err
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	return nil
}

// openStore opens the store named by --store.
func (g *globalOptions) openStore(ctx context.Context, readOnly bool) (storeclient.Store, error) {
	return storeurl.Open(ctx, g.store, storeurl.Options{ReadOnly: readOnly})
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/server"
)

// newServeCommand is `storefs serve` (cli.md): the daemon.
func newServeCommand(g *globalOptions) *cobra.Command {
	var (
		file        string
		printConfig bool
	)
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--nfs ADDR] [--9p ADDR] [--fuse DIR] [--virtiofs SOCKET] [--grpc ADDR] [--metrics ADDR] [--list-root]",
		Short: "Serve the store over FUSE, NFSv3, 9P2000.L, virtio-fs and gRPC until SIGINT/SIGTERM",
		Long: `Serve one store through every configured frontend until SIGINT or SIGTERM.

The configuration comes from --config FILE (else $STOREFS_CONFIG, else
$XDG_CONFIG_HOME/storefs/config.yaml, else /etc/storefs/config.yaml for root),
then STOREFS_* environment variables, then these flags; see docs/config.md.
Without any frontend configured, NFS and 9P listen on free loopback ports and,
where /dev/fuse is usable, the store is mounted at ` + server.DefaultMountpoint() + `.

Each frontend's address and mount command is printed once it serves, then
"ready". SIGHUP reloads the log level, client allow-lists and cache sizes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			src := config.Sources{File: file, Flags: serveFlagKeys(cmd)}
			return runServe(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), src, printConfig)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "configuration file (YAML; env "+config.EnvConfig+")")
	f.String("nfs", "", "serve NFSv3 on HOST:PORT (config nfs.listen)")
	f.String("9p", "", "serve 9P2000.L on HOST:PORT or unix:PATH (config ninep.listen)")
	f.StringArray("fuse", nil, "mount with FUSE on DIR; repeatable (config fuse)")
	f.String("virtiofs", "", "serve virtio-fs (vhost-user-fs) to VMs on the unix socket SOCKET (config virtiofs.socket)")
	f.String("grpc", "", "serve the tvix/snix gRPC store API on HOST:PORT or unix:PATH (config grpc.listen)")
	f.String("metrics", "", "serve Prometheus /metrics, /healthz and /readyz on HOST:PORT (config metrics.listen)")
	f.Bool("list-root", false, "allow listing the store root (config list_root)")
	f.BoolVar(&printConfig, "print-config", false, "print the effective configuration as YAML and exit")
	return cmd
}

// serveFlagKeys binds each flag to its configuration key explicitly (a
// blanket BindPFlags would make keys of the flag names).
func serveFlagKeys(cmd *cobra.Command) map[string]*pflag.Flag {
	keys := map[string]*pflag.Flag{}
	for key, name := range map[string]string{
		"nfs.listen":      "nfs",
		"ninep.listen":    "9p",
		"fuse":            "fuse",
		"virtiofs.socket": "virtiofs",
		"grpc.listen":     "grpc",
		"metrics.listen":  "metrics",
		"list_root":       "list-root",
		"store.url":       "store",
		"log.level":       "log-level",
	} {
		if fl := cmd.Flag(name); fl != nil {
			keys[key] = fl
		}
	}
	return keys
}

// loadServeConfig loads the configuration and fills in the zero-setup
// frontends when none is configured.
func loadServeConfig(src config.Sources) (*config.Config, error) {
	cfg, err := config.Load(src)
	if err != nil {
		return nil, err
	}
	server.QuickStart(cfg)
	return cfg, nil
}

func runServe(ctx context.Context, stdout, stderr io.Writer, src config.Sources, printConfig bool) error {
	cfg, err := loadServeConfig(src)
	if err != nil {
		return err
	}
	if printConfig {
		b, err := cfg.YAML()
		if err != nil {
			return err
		}
		if f := src.FindFile(); f != "" {
			fmt.Fprintf(stdout, "# effective configuration: defaults < %s < STOREFS_* environment < flags\n", f)
		} else {
			fmt.Fprintln(stdout, "# effective configuration: defaults < STOREFS_* environment < flags (no configuration file)")
		}
		_, err = stdout.Write(b)
		return err
	}

	level := new(slog.LevelVar)
	l, err := server.ParseLevel(cfg.Log.Level)
	if err != nil {
		return err
	}
	level.Set(l)
	log, err := server.NewLogger(stderr, cfg.Log.Format, level)
	if err != nil {
		return err
	}

	// SIGHUP is caught before anything starts, so that an early one does
	// not kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	srv, err := server.Start(ctx, cfg, server.Options{Logger: log, LogLevel: level})
	if err != nil {
		return err
	}
	for _, f := range srv.Frontends() {
		fmt.Fprintf(stdout, "%-8s %-22s %s\n", f.Name(), f.Addr(), f.Usage())
	}
	fmt.Fprintln(stdout, "ready")
	if err := server.Notify("READY=1\nSTATUS=serving"); err != nil {
		log.Warn("cannot notify the service manager", "err", err)
	}

	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-hup:
			reload(srv, src, log)
		}
	}

	server.Notify("STOPPING=1")
	// A second SIGINT or SIGTERM while draining ends the process at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	timeout := srv.Config().Timeouts.Shutdown.Std()
	log.Info("shutting down", "drain_timeout", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	// The drain is bounded by timeout; closing what is left takes moments.
	// A shutdown still running well past that is a bug somewhere: leave
	// rather than hang the service manager.
	hard := time.NewTimer(timeout + hardStopGrace)
	defer hard.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	case <-again:
		log.Warn("second signal: exiting without finishing the shutdown")
		return &exitError{code: 1, err: errors.New("shutdown interrupted by a second signal")}
	case <-hard.C:
		log.Error("shutdown did not finish; exiting without it", "waited", timeout+hardStopGrace)
		return &exitError{code: 1, err: fmt.Errorf("shutdown did not finish within %s", timeout+hardStopGrace)}
	}
}

// hardStopGrace is how long past timeouts.shutdown serve waits for the
// shutdown to finish before it exits anyway.
const hardStopGrace = 10 * time.Second

// reload re-reads the configuration on SIGHUP and applies what it can.
func reload(srv *server.Server, src config.Sources, log *slog.Logger) {
	server.Notify("RELOADING=1")
	defer server.Notify("READY=1")
	cfg, err := loadServeConfig(src)
	if err != nil {
		log.Error("reload failed; the running configuration stays", "err", err)
		return
	}
	rep, err := srv.Reload(cfg)
	if err != nil {
		log.Error("reload failed; the running configuration stays", "err", err)
		return
	}
	log.Info("reloaded", "applied", rep.Applied, "need_restart", rep.NeedRestart)
}

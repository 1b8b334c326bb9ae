package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/vfs"
)

// fuseFrontend is one FUSE mount.
type fuseFrontend struct {
	mnt config.FUSEMount
	fs  *vfs.FS
	m   *Metrics
	log *slog.Logger

	srv     *fuse.Server
	created bool // the mountpoint was made by Start; Shutdown removes it
}

func newFUSEFrontend(mnt config.FUSEMount, fs *vfs.FS, m *Metrics, log *slog.Logger) *fuseFrontend {
	return &fuseFrontend{mnt: mnt, fs: fs, m: m, log: log}
}

func (f *fuseFrontend) Name() string { return ProtoFUSE }

// Start mounts. A mountpoint that does not exist is created (and removed
// again at shutdown), so that a configuration can name a directory under
// /run.
func (f *fuseFrontend) Start(ctx context.Context) error {
	dir := f.mnt.Mountpoint
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("fuse: create mountpoint: %w", err)
		}
		f.created = true
	}
	opts := fuse.MountOptions{Options: fuse.Options{Logger: f.log}, AllowOther: f.mnt.AllowOther}
	srv, err := fuse.Mount(dir, f.fs, opts)
	if err != nil {
		f.removeDir()
		return fmt.Errorf("fuse: %w", err)
	}
	f.srv = srv
	return nil
}

func (f *fuseFrontend) Addr() string { return f.mnt.Mountpoint }

func (f *fuseFrontend) Usage() string { return "mounted at " + f.mnt.Mountpoint }

// Shutdown waits for requests in flight, then unmounts (lazily if the
// mount is busy: nothing stays mounted).
func (f *fuseFrontend) Shutdown(ctx context.Context) error {
	waitIdle(ctx, f.m, ProtoFUSE)
	err := f.srv.Unmount()
	f.removeDir()
	if err != nil {
		return fmt.Errorf("fuse: %w", err)
	}
	return nil
}

func (f *fuseFrontend) removeDir() {
	if f.created {
		os.Remove(f.mnt.Mountpoint)
	}
}

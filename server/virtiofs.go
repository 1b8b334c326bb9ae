package server

import (
	"context"
	"fmt"
	"log/slog"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/protocols/virtiofs"
	"github.com/storefs/storefs/vfs"
)

// ProtoVirtioFS is the protocol label of the virtio-fs frontend.
const ProtoVirtioFS = "virtiofs"

// virtiofsFrontend is the vhost-user-fs back-end: VMMs connect to its unix
// socket and their guests mount the store with mount -t virtiofs. Each
// guest mount is served by the FUSE frontend's RawFileSystem over the
// shared vfs.
type virtiofsFrontend struct {
	cfg config.VirtioFS
	fs  *vfs.FS
	m   *Metrics
	log *slog.Logger

	srv  *virtiofs.Server
	done chan error
}

func (f *virtiofsFrontend) Name() string { return ProtoVirtioFS }

func (f *virtiofsFrontend) Start(ctx context.Context) error {
	f.srv = &virtiofs.Server{
		Socket: f.cfg.Socket,
		Tag:    f.cfg.Tag,
		FileSystem: func() gofuse.RawFileSystem {
			// The guest lists directories again through the device
			// rather than keeping copies in its own page cache: see
			// fuse.Options.NoListingCache.
			// Reads that vfs answers with a range of a local file (the
			// embedded store's blob files) go straight into guest memory
			// (preadv), without a copy through the daemon.
			opts := fuse.Options{Logger: f.log, NoListingCache: true}
			return fuse.NewRawFileSystem(f.fs, opts)
		},
		Logger: f.log,
	}
	if err := f.srv.Listen(); err != nil {
		f.srv.Close()
		return err
	}
	f.done = make(chan error, 1)
	go func() { f.done <- f.srv.Serve(context.Background()) }()
	return nil
}

func (f *virtiofsFrontend) Addr() string { return "unix:" + f.cfg.Socket }

func (f *virtiofsFrontend) Usage() string {
	return fmt.Sprintf("qemu -chardev socket,id=storefs,path=%s -device vhost-user-fs-pci,chardev=storefs,tag=%s (shared memory backend); guest: mount -t virtiofs %s /nix/store",
		f.cfg.Socket, f.cfg.Tag, f.cfg.Tag)
}

// Shutdown waits for requests in flight, then ends every VM session and
// removes the socket.
func (f *virtiofsFrontend) Shutdown(ctx context.Context) error {
	waitIdle(ctx, f.m, ProtoVirtioFS)
	f.srv.Close()
	if err := <-f.done; err != nil {
		return fmt.Errorf("virtiofs: %w", err)
	}
	return nil
}

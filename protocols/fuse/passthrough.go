package fuse

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/vfs"
)

// passthrough decides whether regular files are handed to the kernel
// (FOPEN_PASSTHROUGH, Linux 6.9 and later), and finds their blob files.
//
// go-fuse turns passthrough off for the whole mount after one refused
// registration, without saying so. So the first registration is tried here
// first, and a refusal (no CAP_SYS_ADMIN, a kernel without it, a blob
// filesystem stacked too deep) is logged once; after it no blob file is
// handed to the kernel, and reads are spliced from the blob file instead.
type passthrough struct {
	log *slog.Logger

	server atomic.Pointer[fuse.Server] // set by Mount; nil: not a kernel mount
	on     atomic.Bool                 // registration works
	off    atomic.Bool                 // decided: passthrough does not work
	probe  sync.Once
}

// enable checks, once mounted, what the kernel and our privileges allow,
// and logs the outcome once if passthrough cannot work.
func (p *passthrough) enable(srv *fuse.Server) {
	p.server.Store(srv)
	reason := ""
	switch {
	case p.off.Load():
		reason = "turned off (NoPassthrough); reads are spliced from blob files"
	case srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0:
		reason = "the kernel does not offer it (Linux 6.9 or later with CONFIG_FUSE_PASSTHROUGH)"
	case !hasSysAdmin():
		reason = "the daemon lacks CAP_SYS_ADMIN (run as root)"
	}
	if reason != "" {
		p.off.Store(true)
		p.log.Info("fuse: passthrough off; reads go through the daemon", "reason", reason)
	}
}

// backing returns the blob file of f, for passthrough or, where that is
// off, for splicing reads from it; nil if the blob is not a file of its
// own (reads then go through vfs). It is the file of the reader vfs opened
// f with (no second open), and stays owned by f.
//
// A blob packed with others (FileOffset not 0, the local store's small
// blobs) is neither passed through nor spliced: the kernel passes a
// backing file through at the FUSE file's own offsets, and go-fuse sizes
// its splice pipe for page-aligned reads, so a read starting inside a page
// of the pack can come back short (a short read is taken for the end of
// the file). vfs reads such a blob with one pread at its offset in the
// pack.
func (p *passthrough) backing(f *vfs.File) *os.File {
	blob, ok := f.PassthroughFile()
	if !ok {
		return nil
	}
	return blob
}

// usable reports whether the kernel may read f itself; the first call
// tries a registration to find out.
func (p *passthrough) usable(f *os.File) bool {
	if p.off.Load() {
		return false
	}
	p.probe.Do(func() {
		srv := p.server.Load()
		if srv == nil {
			p.off.Store(true) // not a kernel mount (virtio-fs)
			return
		}
		id, e := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
		if e != 0 {
			p.off.Store(true)
			p.log.Info("fuse: passthrough off; reads go through the daemon", "reason", "the kernel refused a backing file", "errno", e)
			return
		}
		srv.UnregisterBackingFd(id)
		p.on.Store(true)
		p.log.Info("fuse: passthrough on: the kernel reads blob files directly")
	})
	return p.on.Load()
}

// hasSysAdmin reports whether the process has CAP_SYS_ADMIN in its
// effective set, which the kernel requires to register backing files.
func hasSysAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}

package nfs

import (
	"errors"
	"log/slog"
	"net/netip"
	"syscall"

	"github.com/storefs/storefs/internal/clientstr"
	"github.com/storefs/storefs/vfs"
)

// MOUNT v3 procedures (RFC 1813 appendix I), and the NULL procedure that
// both programs share.

// mntPathLen is MOUNT's MNTPATHLEN: the longest dirpath, in bytes.
const mntPathLen = 1024

// Authentication flavors MNT offers (RFC 5531): the ones dispatch accepts.
var mountAuthFlavors = []uint32{authSys, authNone}

// null answers NULL of NFS and MOUNT: an empty reply.
func (c *conn) null(*call, *xdrWriter) error { return nil }

// mount answers MNT: any path that walks to a directory can be mounted
// ("/" is the store root; "/<hash>-<name>" a store path). The reply is the
// directory's handle and the flavors AUTH_UNIX and AUTH_NULL. The dirpath's
// length is checked before its bytes are touched: a path longer than
// MNTPATHLEN is MNT3ERR_NAMETOOLONG, whatever it claims.
func (c *conn) mount(cl *call, w *xdrWriter) error {
	r := xdrReader{b: cl.args}
	n := r.u32()
	if r.err != nil {
		return r.err
	}
	if n > mntPathLen {
		sent := r.b // what the record holds of the path, for the log
		if uint32(len(sent)) > n {
			sent = sent[:n]
		}
		err := &vfs.Error{Op: "mount", Errno: syscall.ENAMETOOLONG}
		c.log.Info("nfs: mount refused: path too long", "path", clientstr.TrimBytes(sent), "bytes", n, "max", mntPathLen)
		w.u32(mountStatusOf(err))
		return nil
	}
	dir := string(r.fixed(int(n)))
	if r.err != nil {
		return r.err
	}
	node, err := c.s.fs.Walk(c.s.ctx, dir, true)
	if err == nil && !node.IsDir() {
		err = &vfs.Error{Op: "mount", Errno: syscall.ENOTDIR}
	}
	if err != nil {
		c.log.Info("nfs: mount refused", "path", clientstr.Trim(dir), "err", vfs.Errno(err).Error(), errCause(err))
		w.u32(mountStatusOf(err))
		return nil
	}
	c.log.Info("nfs: mount", "path", clientstr.Trim(dir))
	w.u32(nfs3OK)
	w.opaque(c.s.handOut(node))
	w.u32(uint32(len(mountAuthFlavors)))
	for _, f := range mountAuthFlavors {
		w.u32(f)
	}
	return nil
}

// errCause is the cause of a vfs error as a log attribute, bounded (vfs
// errors may carry the client's path), or an empty attribute, which slog
// leaves out.
func errCause(err error) slog.Attr {
	var ve *vfs.Error
	if !errors.As(err, &ve) || ve.Err == nil {
		return slog.Attr{}
	}
	return slog.String("cause", clientstr.Trim(ve.Err.Error()))
}

// unmount answers UMNT: the server keeps no mount list, so there is
// nothing to forget; the dirpath must still be well-formed.
func (c *conn) unmount(cl *call, _ *xdrWriter) error {
	r := xdrReader{b: cl.args}
	r.opaque(mntPathLen)
	return r.err
}

// mountExport answers EXPORT: one export, "/", listing the client networks
// the daemon admits (loopback and Options.Clients) as its groups. libnfs
// asks for it after every MNT.
func (c *conn) mountExport(_ *call, w *xdrWriter) error {
	w.bool(true) // an export follows
	w.string("/")
	for _, p := range append(loopbackNetworks(), c.s.opts.Clients.Networks()...) {
		w.bool(true)
		w.string(p.String())
	}
	w.bool(false) // end of groups
	w.bool(false) // end of exports
	return nil
}

// mountDump answers DUMP with an empty mount list: the server keeps no
// per-client mount state (UMNT changes nothing), so it has none to report.
func (c *conn) mountDump(_ *call, w *xdrWriter) error {
	w.bool(false)
	return nil
}

// loopbackNetworks are the networks every listener admits.
func loopbackNetworks() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

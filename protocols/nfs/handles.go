package nfs

import (
	"context"
	"errors"
	"syscall"

	"github.com/storefs/storefs/vfs"
)

// handOut returns n's handle for a reply and remembers it as resolved: a
// node the server has just named keeps working through its handle (a
// directory whose Directory is missing lists with EIO, as by path) until
// it drops out of the cache; after that, or after a restart, a handle
// whose object the store lacks is STALE.
func (s *Server) handOut(n vfs.Node) []byte {
	fh := n.Handle()
	s.handles.Add(string(fh), n)
	return fh
}

// maxFH is NFSv3's largest file handle (RFC 1813 NFS3_FHSIZE).
const maxFH = 64

// resolve returns the node an NFS file handle names: the handle is the vfs
// handle itself (vfs.Node.Handle, at most vfs.MaxHandleLen bytes), so it
// survives restarts and needs no table. Recently resolved handles are kept
// in a bounded LRU so that a stream of READs does not ask the store each
// time. A handle that names nothing is ESTALE.
func (s *Server) resolve(ctx context.Context, fh []byte) (vfs.Node, error) {
	if len(fh) == 0 || len(fh) > vfs.MaxHandleLen {
		return vfs.Node{}, &vfs.Error{Op: "resolve handle", Errno: syscall.ESTALE, Err: errors.New("not a storefs handle")}
	}
	if n, ok := s.handles.Get(string(fh)); ok {
		return n, nil
	}
	n, err := s.fs.ResolveHandle(ctx, fh)
	if err != nil {
		return vfs.Node{}, err
	}
	s.handles.Add(string(fh), n)
	return n, nil
}

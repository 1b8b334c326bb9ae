package nfs

import (
	"syscall"

	"github.com/storefs/storefs/vfs"
)

// nfsstat3 values (RFC 1813 section 2.6) the server answers with.
const (
	nfs3OK             = 0
	nfs3ErrPerm        = 1
	nfs3ErrNoEnt       = 2
	nfs3ErrIO          = 5
	nfs3ErrAccess      = 13
	nfs3ErrNotDir      = 20
	nfs3ErrIsDir       = 21
	nfs3ErrInval       = 22
	nfs3ErrROFS        = 30
	nfs3ErrNameLong    = 63
	nfs3ErrStale       = 70
	nfs3ErrBadHandle   = 10001
	nfs3ErrNotSupp     = 10004
	nfs3ErrTooSmall    = 10005
	nfs3ErrServerFault = 10006
)

// statusOfErrno is the one table from the errnos vfs decides (vfs.Errno) to
// NFSv3 status codes. Every NFS reply that carries an error takes its status
// from here; an errno missing from the table is NFS3ERR_IO.
var statusOfErrno = map[syscall.Errno]uint32{
	syscall.EPERM:        nfs3ErrPerm,   // list root with list_root off
	syscall.ENOENT:       nfs3ErrNoEnt,  // no such name, outside the store
	syscall.EIO:          nfs3ErrIO,     // missing or corrupt data, backend down or slow
	syscall.EACCES:       nfs3ErrAccess, // not produced by vfs today; kept for completeness
	syscall.ENOTDIR:      nfs3ErrNotDir, // lookup or readdir below a non-directory
	syscall.EISDIR:       nfs3ErrIsDir,  // read of a directory
	syscall.EINVAL:       nfs3ErrInval,  // readlink of a non-symlink, invalid node
	syscall.ELOOP:        nfs3ErrInval,  // read of a symlink: NFSv3 has no ELOOP; INVAL is what knfsd answers
	syscall.EROFS:        nfs3ErrROFS,   // every write
	syscall.ENAMETOOLONG: nfs3ErrNameLong,
	syscall.ESTALE:       nfs3ErrStale,   // a handle that names nothing the store holds
	syscall.ENODATA:      nfs3ErrNotSupp, // xattrs: not reachable over NFSv3
	syscall.ERANGE:       nfs3ErrInval,
	syscall.EINTR:        nfs3ErrIO, // the request's context ended: its connection is gone, the reply goes nowhere
}

// statusOf returns the NFSv3 status for a vfs error.
func statusOf(err error) uint32 {
	if err == nil {
		return nfs3OK
	}
	if st, ok := statusOfErrno[vfs.Errno(err)]; ok {
		return st
	}
	return nfs3ErrIO
}

// mountStatusOf returns the MOUNT protocol's mountstat3 for a vfs error.
// mountstat3 shares its numbers with nfsstat3 for the codes both have; a
// status MOUNT lacks (STALE, ROFS) becomes MNT3ERR_IO.
func mountStatusOf(err error) uint32 {
	switch st := statusOf(err); st {
	case nfs3OK, nfs3ErrPerm, nfs3ErrNoEnt, nfs3ErrIO, nfs3ErrAccess, nfs3ErrNotDir,
		nfs3ErrInval, nfs3ErrNameLong, nfs3ErrNotSupp, nfs3ErrServerFault:
		return st
	}
	return nfs3ErrIO
}

// noParent is the errno of a LOOKUP of ".." below the root (see
// conn.lookup): the parent of a content-addressed directory is not unique.
const noParent = syscall.ENOENT

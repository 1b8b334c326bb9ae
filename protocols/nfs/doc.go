// Package nfs serves a vfs.FS over NFSv3 and MOUNT v3 on one TCP port, for
// the Linux kernel client, macOS mount_nfs and libnfs, with no rpcbind.
//
// # Design
//
// One record layer answers everything. For each client connection it reads
// RPC records (RFC 5531 record marking, at most Options.MaxRecordSize,
// with Options.IdleTimeout), decodes the call header and decides:
//
//   - protocol errors it answers itself: RPC version ≠ 2 (RPC_MISMATCH),
//     credentials other than AUTH_SYS and AUTH_NONE (AUTH_ERROR), unknown
//     programs such as NFS_ACL 100227 (PROG_UNAVAIL), NFS or MOUNT versions
//     other than 3 (PROG_MISMATCH with mismatch_info 3..3), unknown
//     procedures (PROC_UNAVAIL), malformed arguments (GARBAGE_ARGS);
//   - every MOUNT v3 and NFSv3 procedure it answers from vfs through the
//     route table (routes.go), concurrently (Options.MaxInFlight per
//     connection): MOUNT NULL, MNT, DUMP, UMNT, UMNTALL and EXPORT
//     (mount.go), the NFS procedures (nfs3.go).
//
// A panic in a procedure is answered with SYSTEM_ERR and logged with its
// stack; the connection and the daemon go on.
//
// # Hostile clients
//
// Every length, count and size a client sends is checked before anything
// is allocated for it or logged: records (MaxRecordSize, read as their
// bytes arrive), credentials and verifiers (400 bytes; an AUTH_SYS machine
// name 255, 16 gids), file handles (64), names (255: longer is
// NFS3ERR_NAMETOOLONG), MNT's dirpath (MNTPATHLEN, 1024: longer is
// MNT3ERR_NAMETOOLONG), READ counts (clamped to Options.MaxRead) and
// READDIR counts (clamped to 1 MiB; too small for the reply is
// NFS3ERR_TOOSMALL). Client strings in log lines are bounded quotes
// (internal/clientstr). Every reply is written under a write deadline
// (Options.WriteTimeout), so a client that does not read cannot hold a
// goroutine, and the reply buffers of all connections together are bounded
// by Options.MaxReplyMemory.
//
// # Handles, attributes, listings
//
// An NFS file handle is the vfs handle (vfs.Node.Handle, ≤ 45 bytes): the
// same after a restart and on every server over the same store. A handle
// that names nothing the store holds is NFS3ERR_STALE. Resolved handles are
// kept in a bounded LRU (Options.HandleCacheSize). READDIR and READDIRPLUS
// resume at vfs cookies (nfs3.go), so a directory of any size lists in
// O(entries) with any client buffer size. Every error status comes from
// one table, status.go, over vfs.Errno.
//
// # Reads
//
// READ is answered by the record layer from a vfs.File opened per call.
// When the blob is a range of a file on a local filesystem (a
// trusted-local store: vfs.File.BlobReader then offers File and
// FileOffset), a READ of spliceMin (16 KiB) or more is sent as its XDR
// head from memory followed by the data with sendfile(2) from the blob
// file and the XDR padding, under the connection's send lock
// (sendfile.go). The head is built as for a copied read, so the replies
// are the same bytes. The blob file's length is checked (fstat) before
// the head goes out; a file shorter than its blob is read by copying,
// which answers NFS3ERR_IO where bytes are missing. Such reads are
// reported to the vfs Observer. Options.Sendfile says for which clients:
// by default those on other hosts; loopback clients get copied reads.
//
// # Access control
//
// Serve admits every connection its listener returns: the daemon wraps each
// listener in an internal/netguard Listener, which applies the allow-list
// of client networks, the connection cap and the handshake and idle
// deadlines; the record layer reports each record it reads to it. MOUNT
// EXPORT lists loopback and Options.Clients. Writes are NFS3ERR_ROFS;
// ACCESS never grants MODIFY, EXTEND or DELETE.
package nfs

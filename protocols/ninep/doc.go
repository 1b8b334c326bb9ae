// Package ninep serves a vfs.FS over 9P2000.L, for the Linux v9fs client
// (a VM guest mounting the store over TCP) and 9P tools such as diod's
// diodls and diodcat.
//
// # Design
//
// The package owns the protocol: conn.go is the message loop (framing,
// tags, limits, Tflush, Tversion and msize), fids.go the fids with the walk
// path each stands on, ops.go and sendfile.go the answers, each a few lines
// that ask vfs and encode the reply (msg.go). Every rule about files comes
// from vfs, and errnos come from vfs.Errno in one place (errors.go). No
// library is involved: 9P2000.L is small and fixed, and what storefs needs
// (checked lengths, bounded fids and buffers, Rread by sendfile from the
// file range vfs.File.Read gives) is what a library's server would have to
// be wrapped for. Server (server.go) accepts connections and closes them
// on Close or when its context is done.
//
// # What clients see
//
//   - Tversion: plain "9P2000.L" only; anything else gets Rversion
//     "unknown". msize is clamped to Options.MaxMsize (1 MiB by default;
//     at least 4096).
//   - Tattach: any uname and n_uname succeed (Linux attaches as 'nobody'
//     with n_uname NoUID, then as ” with uid 0). The aname selects the
//     export: "" or "/" is the store root; a path below it such as
//     "<hash>-name/sub" attaches there (walked with the usual checks, so
//     ".." cannot escape), and Rattach carries its qid. Tauth answers
//     ENOENT, diod's "no authentication required".
//   - qid.path is the vfs inode number, stable across restarts and
//     daemons; qid.version is 0 (content never changes).
//   - Twalk of up to 16 names, also from an open fid; a walk fails whole
//     with the error of the name that failed. "." stays; ".." goes to the
//     parent on the fid's walk path (the names that led to it, across
//     Twalks and clones), never above the attach root. p9's (gVisor's)
//     Twalkgetattr, a walk answered with the attributes of its result, is
//     served with the same rules and limits. Tgetattr with the vfs
//     attributes; Tlopen gives iounit 0 so Linux sizes reads by msize;
//     Tread of any count (clamped to msize-11); Treaddir entries carry
//     Linux DT_* types, start with "." and "..", and their offsets (vfs
//     cookies + 2) resume exactly; Tstatfs reports V9FS_MAGIC and names of
//     255 bytes; Txattrwalk serves the digest attributes (vfs's ENODATA for
//     other names) for Treads of the new fid; Tflush, Tclunk, Tfsync and
//     Tlock answer.
//   - Every write-type request (Tlcreate, Tmkdir, Tsymlink, Tmknod, Tlink,
//     Trename, Trenameat, Tunlinkat, Tsetattr, Txattrcreate, Twrite, Tremove,
//     Tlopen for writing or truncation) gets Rlerror EROFS (vfs.ReadOnly);
//     Tremove clunks its fid, as 9P says.
//
// # Reads without a copy
//
// vfs.File.Read gives a read either as bytes or, when a local verified file
// holds them, as a range of that file. A Tread whose range is at least
// 16 KiB is answered with the Rread header written to the socket and the
// payload sent by sendfile(2) from the file. A file shorter than the range
// (a damaged store; checked with one fstat per file and fid) is read by
// copying, so such a read answers EIO instead of failing after its header
// went out. vfs reports every read to its Observer whichever way it is
// sent. Options.NoSendfile turns this off.
//
// # Limits and hostile clients
//
// A malformed or truncated message, a message larger than msize, a request
// before Tversion, a second Tversion or a reused in-flight tag closes that
// connection with a log line; an unknown fid fails its request (EBADF).
// Nothing is sized from a count in a message before the count is checked:
// the message's size against msize before it is read, a Twalk's name count
// against 16 before its names, and the bodies of requests the server does
// not serve are never decoded (replies sent as requests get ENOSYS and
// unknown types EIO); a Tattach uname or aname longer than PATH_MAX gets
// ENAMETOOLONG; a write request's body is skipped unread.
// Options.MaxFids bounds the walk-path entries a connection's fids hold
// (one per name a walk passed through, kept while a fid walked from it
// lives: fids.go), Options.MaxServerFids those of all connections (each
// keeps its first 1 024), EMFILE beyond; Options.MaxRequests bounds the
// requests in flight and Options.MaxReadBytes the read buffers they hold
// (the connection is read no further until one is answered). A reply the
// client does not take within Options.WriteTimeout, or a message that
// stops arriving midway for Options.MessageTimeout, closes the connection.
// A panic while answering a request answers it EIO; one in the message
// loop closes its connection; both are logged at Error. Serve admits every
// connection its listener returns: the daemon wraps each listener in an
// internal/netguard Listener (allow-list of client networks, connection
// cap, handshake and idle deadlines), to which the loop reports each
// message it reads. Nothing a client sends reaches another client's
// connection.
package ninep

// Package ninep serves a vfs.FS over 9P2000.L, for the Linux v9fs client
// (a VM guest mounting the store over TCP) and 9P tools such as diod's
// diodls and diodcat.
//
// # Design
//
// github.com/hugelgupf/p9 owns the protocol: fids, walks, message
// encoding. Each fid's p9.File is a thin view onto one vfs.Node (file.go);
// every rule comes from vfs, and errnos come from vfs.Errno in one place
// (errors.go). Between the socket and the library sits a wire layer
// (wire.go) that frames the 9P stream and enforces or corrects what p9
// v0.4.1 does not: strict version negotiation, msize clamping, count
// clamping, write refusal, fid and request limits, and the xattr and
// Tremove replies. Server (server.go) accepts connections, runs one
// p9.Server per connection and tracks connections so that Close and a done context close them (p9's
// ServeContext leaves open connections running).
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
//     ".." cannot escape). Tauth answers ENOENT, diod's "no authentication
//     required".
//   - qid.path is the vfs inode number, stable across restarts and
//     daemons; qid.version is 0 (content never changes).
//   - Twalk of up to 16 names, also from an open fid (p9's Twalkgetattr,
//     which the library accepts too, has the same limits); Tgetattr with the
//     vfs attributes; Tlopen gives iounit 0 so Linux sizes reads by msize;
//     Tread of any count (clamped to msize-11); Treaddir entries carry
//     Linux DT_* types, start with "." and "..", and their offsets (vfs
//     cookies + 2) resume exactly; Tstatfs reports V9FS_MAGIC and names of
//     255 bytes; Txattrwalk serves the digest attributes, ENODATA for other
//     names; Tflush, Tclunk and Tremove answer.
//   - Every write-type request (Tlcreate, Tmkdir, Tsymlink, Tmknod, Tlink,
//     Trename, Trenameat, Tunlinkat, Tsetattr, Txattrcreate, Twrite, Tremove,
//     Tlopen for writing or truncation) gets Rlerror EROFS.
//
// # Reads without a copy
//
// When a blob is a file on a local filesystem (the local store's reader
// has File and FileOffset), a Tread of at least 16 KiB is answered with
// the Rread header written to the socket and the payload sent by
// sendfile(2) from the blob file: file.ReadAt only records where the bytes
// are, and the wire layer sends them when the library writes the reply
// (sendfile.go). After one such read the wire layer answers that fid's
// Treads itself, skipping the library's per-request goroutine, buffer and
// zeroing, until the fid is clunked or made again (Tattach, Twalk,
// Twalkgetattr, Txattrwalk). Replies are the same bytes and errors as
// copied reads: a blob file shorter than its blob's recorded end (checked
// once, when the fid is opened) is read by copying, so a read across the
// end answers EIO instead of failing after its header went out. Those
// reads are reported to the vfs Observer. Options.NoSendfile turns this
// off.
//
// # Limits and hostile clients
//
// A malformed or truncated message, a message larger than msize, a request
// before Tversion, a second Tversion or a reused in-flight tag closes that
// connection with a log line; an unknown fid fails its request (EBADF).
// Only the requests the server serves reach the library (its decoders size
// arrays from counts in the message); replies sent as requests get ENOSYS
// and unknown types EIO, as the library would answer; a Tattach uname or
// aname longer than PATH_MAX gets ENAMETOOLONG; a write request's body is
// skipped unread. Options.MaxFids bounds a connection's fid references in
// the library (one per name a walk passed through, kept while a fid walked
// from it lives: fids.go), Options.MaxServerFids those of all connections
// (each keeps its first 1 024), EMFILE beyond; Options.MaxRequests bounds
// the requests in flight and Options.MaxReadBytes the read buffers they
// hold (the connection is read no further until one is answered). A reply
// the client does not take within Options.WriteTimeout, or a message that
// stops arriving midway for Options.MessageTimeout, closes the connection.
// A panic in a request answers it EIO; one in the wire layer closes its
// connection; both are logged at Error. Serve admits every connection its
// listener returns: the daemon wraps each listener in an internal/netguard
// Listener (allow-list of client networks, connection cap, handshake and
// idle deadlines), to which the wire layer reports each message it reads.
// Nothing a client sends reaches another client's connection.
//
// # Known limits of the p9 library (v0.4.1)
//
// p9 keeps a path tree per server that it never prunes: a connection's
// memory grows with the number of distinct paths it has walked, about 0.3
// KiB each (bounded by the store, not by MaxFids; freed when the
// connection closes; hence one p9.Server per connection). A Twalk or Treaddir on a fid that is not a directory gets
// EINVAL rather than ENOTDIR (Linux never sends one). Rattach carries the
// root's qid even when the aname selects a subtree (Linux takes the root
// inode from Tgetattr, which is right).
package ninep

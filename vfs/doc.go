// Package vfs is the one read-only filesystem every storefs frontend (FUSE,
// NFSv3, 9P2000.L, virtiofs) serves. It decides everything a user sees
// (spec/filesystem.md); frontends only translate its answers to their
// protocol.
//
// # Nodes and operations
//
// An FS wraps a storeclient.Store. A Node is a small immutable value: the
// root (FS.Root), the root node of a PathInfo, or an entry below one.
// FS.Lookup, FS.ReadDir, FS.Attr, FS.Readlink, FS.Open (then File.Read or
// File.ReadAt), FS.Getxattr, FS.Listxattr and FS.Statfs are the operations; FS.Walk
// resolves a path for path-based callers. FS.Attr needs no store call, so
// readdirplus and getattr are free once a node is known.
//
// # Observing
//
// Options.Observer, if set, is called for every operation (with the label
// of the FS.View it came through: "fuse", "nfs" …), cache lookup and store
// call: the daemon's metrics. Views share one state, so every frontend of a
// daemon serves the same caches.
//
// # Errors
//
// Every error is an *Error carrying the errno the frontend answers with;
// Errno(err) returns it (ENOENT, EIO, EPERM, EROFS, EINVAL, EISDIR, ENOTDIR,
// ENODATA, ERANGE, ENAMETOOLONG, ESTALE, ELOOP; ENOTSUP from
// FS.ReadPrefetched only). Writes are refused with ReadOnly(op, name)
// (EROFS), which matches ErrReadOnly.
//
// # Inode numbers
//
// The root is 1. Every other node's inode number is a pure function of its
// content: the first 64 bits of the Directory digest (directories) or blob
// digest (files), XORed with a constant per kind — directory, plain file,
// executable file — or of the BLAKE3 of the target (symlinks). Equal content
// has one inode number everywhere, on every daemon and after restarts; 0 and
// 1 are moved to 2 and 3. Distinct contents collide only by chance: for n
// distinct nodes the probability that any two share a number is about
// 1 - exp(-n²/2^65): 2.7e-8 for 10^6 nodes, 2.7 % for 10^9 nodes. A
// frontend that dedups nodes by inode (go-fuse does) should therefore check
// that the content matches before reusing a node.
//
// # Handles
//
// Node.Handle returns at most MaxHandleLen (45) bytes; FS.ResolveHandle
// turns a handle back into the Node on any FS over the same store, without
// a table. The first byte is a tag:
//
//	0x01                                   the root
//	0x02 storePathDigest[20]               the root node of a PathInfo
//	0x03 digest[32] size[8]                a directory (Directory digest, size)
//	0x04 digest[32] size[8] flags[1]       a file (blob digest, size, bit 0 executable)
//	0x05 parent[32] parentSize[8] index[4] a symlink: entry index in its parent Directory
//
// Integers are big endian. A handle that does not decode or whose object the
// store does not hold resolves to ESTALE.
//
// # Directory cookies
//
// FS.ReadDir resumes after a cookie (0 starts; never returned). Below the
// root, entry i has cookie i+1 (Directories are immutable). At the root,
// whose names can grow during a listing, the cookie is the 60-bit value of
// the first 12 nixbase32 characters of the basename shifted left by 4, plus
// 1 plus the rank among names sharing that prefix, so it rises with the
// names and a resumed listing never drops or repeats a name.
//
// # Integrity and bounds
//
// A store that is not trusted local data (storeclient.IsTrustedLocal) gets
// every Directory re-hashed on fetch and every blob verified before its
// bytes are served: per chunk group through its bao outboard when the
// store offers one, or else fetched once, whole, into the spool and hashed
// (see FS.Open). Child Directory sizes are checked against what the parent recorded. Every
// backend call is bounded by Options.Timeout. Directories are cached in an
// LRU of Options.DirectoryCacheSize with one fetch per concurrent miss;
// nothing else grows with the nodes seen.
//
// # Store capabilities
//
// What a store can do beyond storeclient.Store is declared once in
// storeclient (storeclient/capability.go) and found here by type
// assertion, with the helpers' fallbacks: trust (TrustedStore), bao
// outboards (OutboardStore), opening a blob of known size
// (SizedBlobOpener), blob files (BlobFiler) and reading many blobs ahead
// (BlobPrefetcher). Frontends never ask the store: File.Read says whether
// a read may be served as a range of a local file, File.PassthroughFile
// whether the kernel may read a blob's file itself, FS.LocalBlobFiles
// whether the store keeps trusted blob files at all, and FS.Prefetch,
// FS.PrefetchFile and FS.ReadPrefetched read files ahead of their reads
// (trusted local stores only; nothing for the others).
//
// A caller whose context is cancelled while a backend call runs (a FUSE
// INTERRUPT, a 9P Tflush, a closed connection) gets EINTR, not EIO: nothing
// is wrong with the store, and programs retry a call that fails with EINTR.
// Fetches and verifications shared by concurrent callers run detached from
// every caller's cancellation, so one caller giving up never fails the
// others.
package vfs

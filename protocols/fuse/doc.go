// Package fuse serves a vfs.FS through the Linux kernel's FUSE, with
// github.com/hanwen/go-fuse/v2.
//
// The package only translates: every answer (names, attributes, inode
// numbers, errors, refusals) comes from vfs. NewRawFileSystem builds the one
// fuse.RawFileSystem that holds all FUSE operation logic; Mount serves it on
// a kernel mount, and a virtio-fs transport can serve the same value.
//
// # Nodes
//
// The nodes follow go-fuse's fs package: dirNode (the root and
// directories), fileNode and symlinkNode, each implementing only the
// operations it supports, plus the write operations, which every node
// refuses with EROFS through vfs.ReadOnly (the kernel refuses them first on
// a read-only mount; a virtio-fs guest may mount read-write).
//
// # Identity
//
// st_ino is the vfs inode number, so equal content shows one inode number
// everywhere (spec/filesystem.md). The FUSE node id is separate: go-fuse
// keys nodes by the whole fs.StableAttr, so
//
//   - files and symlinks use Gen = more bits of their content identity: a
//     file reached by two paths is one node (as a hard link), and two
//     contents whose 64-bit inode numbers collide stay apart;
//   - directories use Gen = a hash of their path, so every directory path
//     is its own node. The kernel must never see one directory node under
//     two names (dentry aliasing makes lookups fail at random), while
//     st_ino stays shared as the spec says.
//
// Nodes are forgotten when the kernel forgets them, so memory stays
// bounded by what the kernel caches.
//
// # Caching and speed
//
// Content never changes while the daemon runs, so entries and attributes
// are cached by the kernel forever, files are opened with FOPEN_KEEP_CACHE
// and directories below the root with FOPEN_CACHE_DIR (unless
// Options.NoListingCache, as the virtio-fs frontend sets). Negative lookups
// are not cached: new store paths can appear in the root.
//
// Every read asks vfs (vfs.File.Read), which decides what may be served
// and how: when it answers with a range of a local file that holds the
// blob from its start (a trusted store's blob file, a remote blob verified
// whole into the spool), the range is spliced from that file into the FUSE
// device; otherwise the bytes vfs returns are sent.
//
// When vfs serves the store's blobs as trusted local files
// (vfs.FS.LocalBlobFiles: the embedded local store), two more things
// happen. Where the kernel and privileges allow it, regular files whose
// blob is a file of its own (vfs.File.PassthroughFile) are opened with
// FUSE passthrough: the kernel reads the blob's file itself and reads
// never reach the daemon. And opening the first file of a directory has
// vfs read the directory's other small files ahead, storing those it read
// ahead in the kernel's page cache (see prefetch.go). The package never
// asks the store itself: what the store can do (storeclient's optional
// capabilities) is vfs' business.
package fuse

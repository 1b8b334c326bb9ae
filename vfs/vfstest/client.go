// Package vfstest is the conformance suite of docs/../spec conformance.md as
// a reusable harness, in the manner of testing/fstest.TestFS: every frontend
// (FUSE, NFS, 9P, virtio-fs, vfs itself) runs the same named cases
// through its own real client.
//
// The suite chooses the store and vfs options of each case (the fixtures of
// vectors.md in a memory store, or a store with a missing, corrupt or
// stalling object), builds the *vfs.FS and hands it to the frontend's Serve
// function, which starts its server over it and returns a Client. The
// frontend stops its server in t.Cleanup.
package vfstest

import (
	"io/fs"
	"time"
)

// Client is what a frontend's real client can do, in the terms the cases
// need. Paths are slash-separated and relative to the served root ("" is the
// root). Errors must carry the errno the client received: a syscall.Errno in
// the chain (as *os.PathError does) or a *vfs.Error.
type Client interface {
	// Stat follows symlinks; Lstat does not.
	Stat(path string) (Stat, error)
	Lstat(path string) (Stat, error)
	// ReadDir lists a directory, reading at most batch entries per protocol
	// request when the client lets the caller choose (0: the client's
	// default). "." and ".." may be included; the suite ignores them.
	ReadDir(path string, batch int) ([]DirEntry, error)
	// ReadFile reads a whole file; ReadAt reads part of one (as
	// io.ReaderAt, io.EOF or nil at the end).
	ReadFile(path string) ([]byte, error)
	ReadAt(path string, p []byte, off int64) (int, error)
	Readlink(path string) (string, error)
	// Getxattr returns the value of an extended attribute (following
	// symlinks).
	Getxattr(path, name string) ([]byte, error)

	// Write attempts: each must fail, with EROFS.
	Create(path string) error
	Mkdir(path string) error
	Rename(oldpath, newpath string) error
	Remove(path string) error
	Chmod(path string, mode fs.FileMode) error
	Truncate(path string, size int64) error
	// WriteAt opens an existing file for writing (where the protocol
	// allows) and writes p at off.
	WriteAt(path string, p []byte, off int64) error
}

// Stat is what a client sees of a node.
type Stat struct {
	Mode   fs.FileMode // type bits and permissions, as io/fs
	Size   int64
	Ino    uint64
	Nlink  uint64
	UID    uint32
	GID    uint32
	Blocks int64
	Mtime  time.Time
}

// DirEntry is one listed name with its type bits (Mode.Type()).
type DirEntry struct {
	Name string
	Type fs.FileMode
}

// HandleClient is implemented by clients of protocols with persistent
// handles (NFS): case 25 checks that a handle from before a restart still
// resolves, and the hostile-input case that garbage handles fail cleanly.
type HandleClient interface {
	Client
	// Handle returns the protocol handle of path.
	Handle(path string) ([]byte, error)
	// StatHandle stats the node a handle names.
	StatHandle(h []byte) (Stat, error)
}

// GarbageSender is implemented by clients that can send malformed protocol
// messages; the hostile-input case sends garbage and checks that the server
// keeps serving.
type GarbageSender interface {
	SendGarbage() error
}

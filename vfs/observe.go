package vfs

import (
	"time"
)

// Op names an FS operation as an Observer sees it.
type Op uint8

// The operations an Observer is told about. FS.Attr, FS.Xattrs and
// FS.Statfs are pure functions of a Node that frontends call very often;
// they are not reported.
const (
	OpLookup Op = iota
	OpReadDir
	OpOpen
	OpRead // File.ReadAt; its bytes are the bytes read
	OpClose
	OpReadlink
	OpGetxattr
	OpListxattr
	OpResolveHandle
	OpWalk

	// NumOps is the number of Op values, for observers that keep a table
	// indexed by Op.
	NumOps
)

var opNames = [NumOps]string{
	OpLookup:        "lookup",
	OpReadDir:       "readdir",
	OpOpen:          "open",
	OpRead:          "read",
	OpClose:         "close",
	OpReadlink:      "readlink",
	OpGetxattr:      "getxattr",
	OpListxattr:     "listxattr",
	OpResolveHandle: "resolve_handle",
	OpWalk:          "walk",
}

// String returns the operation's name in lower case ("lookup", "read" …),
// as used for metric labels.
func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "unknown"
}

// The caches and backend calls an Observer is told about.
const (
	CacheDirectory     = "directory"      // Directories by digest
	CacheOutboard      = "outboard"       // bao outboards of remote blobs
	CacheVerifiedGroup = "verified_group" // verified chunk groups of remote blobs

	BackendGetPathInfo   = "get_path_info"
	BackendListPathInfos = "list_path_infos"
	BackendGetDirectory  = "get_directory"
	BackendOpenBlob      = "open_blob"
	BackendStatBlob      = "stat_blob"
	BackendBlobOutboard  = "blob_outboard"
)

// Observer watches an FS: metrics, tracing. It is set in Options.Observer
// and called synchronously from the operation, so its methods must be
// cheap, safe for concurrent use and must not call back into the FS.
//
// The protocol of a call is the label of the FS view it was made through
// (FS.View); the FS returned by New has the label "".
type Observer interface {
	// OpStart is called as an operation starts.
	OpStart(protocol string, op Op)
	// OpEnd is called once for every OpStart, when the operation returns:
	// how long it took, the bytes it produced (OpRead only) and its error
	// (nil on success; io.EOF at the end of a file is not an error).
	OpEnd(protocol string, op Op, elapsed time.Duration, bytes int, err error)
	// CacheLookup is called for each lookup in one of the FS's caches
	// (CacheDirectory, CacheOutboard, CacheVerifiedGroup).
	CacheLookup(cache string, hit bool)
	// BackendCall is called after each call to the store (BackendGetPathInfo
	// …), with its duration and error.
	BackendCall(call string, elapsed time.Duration, err error)
}

// View returns an FS that shares f's store, caches and options but reports
// its operations to Options.Observer under the label protocol ("fuse",
// "nfs", "ninep" …). Views are cheap; without an Observer they behave
// exactly as f.
func (f *FS) View(protocol string) *FS {
	return &FS{fsState: f.fsState, protocol: protocol}
}

// Protocol returns the label of this view ("" for the FS New returned).
func (f *FS) Protocol() string { return f.protocol }

// SetCacheSizes changes the capacity of the Directory cache (entries), of
// the remote-blob memory (bytes) and of the spool (bytes), for every view
// of the FS, dropping the least recently used entries if they shrink. Zero
// or less keeps a size as it is. Options keeps reporting the sizes New was
// given.
func (f *FS) SetCacheSizes(directories int, remoteBytes, spoolBytes int64) {
	if directories > 0 {
		f.dirs.Resize(directories)
	}
	if remoteBytes > 0 {
		f.remote.resize(remoteBytes)
	}
	if spoolBytes > 0 {
		f.spool.setLimit(spoolBytes)
	}
}

// RemoteUsage reports what the FS holds for remote blobs: the bytes of bao
// outboards and verified chunk groups in memory, and the bytes spooled.
func (f *FS) RemoteUsage() (memory, spooled int64) {
	spooled, _ = f.spool.usage()
	return f.remote.bytes(), spooled
}

// opStart tells the observer that op starts and returns the start time (the
// zero time without an observer).
func (f *FS) opStart(op Op) time.Time {
	if f == nil || f.opts.Observer == nil {
		return time.Time{}
	}
	f.opts.Observer.OpStart(f.protocol, op)
	return time.Now()
}

// opEnd tells the observer that op, started at t0, ended.
func (f *FS) opEnd(op Op, t0 time.Time, bytes int, err error) {
	if f == nil || f.opts.Observer == nil {
		return
	}
	f.opts.Observer.OpEnd(f.protocol, op, time.Since(t0), bytes, err)
}

// cacheLookup reports one cache lookup.
func (f *FS) cacheLookup(cache string, hit bool) {
	if f.opts.Observer != nil {
		f.opts.Observer.CacheLookup(cache, hit)
	}
}

// backendStart returns the start time of a backend call (zero without an
// observer); backendEnd reports it.
func (f *FS) backendStart() time.Time {
	if f.opts.Observer == nil {
		return time.Time{}
	}
	return time.Now()
}

func (f *FS) backendEnd(call string, t0 time.Time, err error) {
	if f.opts.Observer != nil {
		f.opts.Observer.BackendCall(call, time.Since(t0), err)
	}
}

// Package binarycache is a lazy storeclient.Store over a Nix binary cache
// (the `nix+file://`, `nix+http://` and `nix+https://` store URLs; see
// docs/binary-caches.md).
//
// A binary cache cannot be listed cheaply and serves NARs, not castore
// objects, so the backend keeps a local cache store (any storeclient.Store,
// by default an in-memory one). GetPathInfo of a digest the cache store
// does not hold fetches `<hash>.narinfo`, checks it (store path, signatures
// against the trusted public keys, or for a content-addressed path the
// content address itself), downloads the NAR (none, xz, zstd or bzip2
// compressed), verifies FileSize/FileHash over the download and
// NarSize/NarHash over the NAR while it streams into the cache store
// (blobs and Directories), and stores the PathInfo last. A fetch that fails
// leaves no PathInfo: blobs and Directories it stored are unreferenced
// orphans in a content-addressed store, never half a store path.
//
// Concurrent lookups of one path share one fetch, which belongs to the
// Store (it runs on until it finishes or the Store is closed, even if the
// caller that started it gives up). Lookups of paths the cache does not
// have are remembered for a while (the negative TTL), so a filesystem that
// is probed for missing names does not hammer the server.
//
// Blob, Directory and ListPathInfos calls go to the cache store only. The
// Store is read-only to its callers.
package binarycache

// Package storeclient is the castore model of storefs and the interfaces
// every store backend implements.
//
// The model follows the tvix/snix castore (see ../shared/spec/castore.md):
// blobs addressed by their BLAKE3 digest, immutable Directory objects
// addressed by the BLAKE3 digest of their canonical protobuf encoding, and
// PathInfo records that map a Nix store path to a root Node.
//
// Values of the model types are valid by construction: names, symlink
// targets, nodes, directories and store paths are checked once, when they
// are made or decoded, and everything downstream trusts them.
package storeclient

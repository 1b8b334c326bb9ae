package storeclient

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// StoreDir is the Nix store directory every store path lives in.
const StoreDir = "/nix/store"

// StorePathDigestSize is the length of a store path's digest in bytes.
const StorePathDigestSize = 20

// storePathHashLen is the nixbase32 length of a store path digest.
const storePathHashLen = 32

// maxStorePathNameLen is the longest name part of a store path.
const maxStorePathNameLen = 211

// StorePathDigest is the 20-byte digest of a store path.
type StorePathDigest [StorePathDigestSize]byte

// String returns the 32 nixbase32 characters of d.
func (d StorePathDigest) String() string { return nixbase32.EncodeToString(d[:]) }

// StorePath is a validated Nix store path: a 20-byte digest and a name.
type StorePath struct {
	Digest StorePathDigest
	Name   string
}

// NewStorePath validates name and returns the store path.
func NewStorePath(digest StorePathDigest, name string) (StorePath, error) {
	if err := checkStorePathName(name); err != nil {
		return StorePath{}, err
	}
	return StorePath{Digest: digest, Name: name}, nil
}

// ParseStorePath parses an absolute store path, `/nix/store/<hash>-<name>`.
// Trailing components below the store path are an error.
func ParseStorePath(s string) (StorePath, error) {
	base, ok := strings.CutPrefix(s, StoreDir+"/")
	if !ok {
		return StorePath{}, invalid(RuleStorePath, "%q is not under %s", s, StoreDir)
	}
	return ParseStorePathBasename(base)
}

// ParseStorePathBasename parses `<hash>-<name>`: 32 nixbase32 characters,
// "-", and a name of 1-211 bytes from [A-Za-z0-9+-_?=.] not starting with ".".
func ParseStorePathBasename(s string) (StorePath, error) {
	if len(s) < storePathHashLen+2 || s[storePathHashLen] != '-' {
		return StorePath{}, invalid(RuleStorePath, "%q is not <32 nixbase32 characters>-<name>", s)
	}
	var p StorePath
	for i := 0; i < storePathHashLen; i++ {
		if !nixbase32.Is(s[i]) {
			return StorePath{}, invalid(RuleStorePath, "%q: %q is not a nixbase32 character", s, s[i])
		}
	}
	if _, err := nixbase32.Decode(p.Digest[:], []byte(s[:storePathHashLen])); err != nil {
		return StorePath{}, invalid(RuleStorePath, "%q: hash: %v", s, err)
	}
	name := s[storePathHashLen+1:]
	if err := checkStorePathName(name); err != nil {
		return StorePath{}, fmt.Errorf("%q: %w", s, err)
	}
	p.Name = name
	return p, nil
}

func checkStorePathName(name string) error {
	if len(name) == 0 || len(name) > maxStorePathNameLen {
		return invalid(RuleStorePath, "store path name must have 1-%d bytes, not %d", maxStorePathNameLen, len(name))
	}
	if name[0] == '.' {
		return invalid(RuleStorePath, "store path name %q starts with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+-_?=.", c) >= 0
		if !ok {
			return invalid(RuleStorePath, "store path name %q contains %q", name, c)
		}
	}
	return nil
}

// Basename returns `<hash>-<name>`.
func (p StorePath) Basename() string { return p.Digest.String() + "-" + p.Name }

// Absolute returns `/nix/store/<hash>-<name>`.
func (p StorePath) Absolute() string { return StoreDir + "/" + p.Basename() }

func (p StorePath) String() string { return p.Absolute() }

// FixedOutputSourcePath returns the store path that `nix-store --add` gives
// a file system object whose NAR serialisation has the given sha256 and no
// references: the fixed-output, recursive, sha256 ("source") recipe.
func FixedOutputSourcePath(narSHA256 [sha256.Size]byte, name string) (StorePath, error) {
	if err := checkStorePathName(name); err != nil {
		return StorePath{}, err
	}
	fingerprint := "source:sha256:" + hex.EncodeToString(narSHA256[:]) + ":" + StoreDir + ":" + name
	h := sha256.Sum256([]byte(fingerprint))
	return StorePath{Digest: compressHash(h[:]), Name: name}, nil
}

// compressHash folds a hash into 20 bytes by XOR, as Nix does.
func compressHash(h []byte) StorePathDigest {
	var d StorePathDigest
	for i, b := range h {
		d[i%StorePathDigestSize] ^= b
	}
	return d
}

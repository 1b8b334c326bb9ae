package binarycache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storepb"
)

// ParseContentAddress parses a narinfo CA field: `fixed:r:<algo>:<hash>`
// (recursive, the NAR hashed), `fixed:<algo>:<hash>` (flat, the file's
// contents hashed) or `text:sha256:<hash>`.
func ParseContentAddress(s string) (*storeclient.ContentAddress, error) {
	var method, rest string
	switch {
	case strings.HasPrefix(s, "fixed:r:"):
		method, rest = "nar", s[len("fixed:r:"):]
	case strings.HasPrefix(s, "fixed:"):
		method, rest = "flat", s[len("fixed:"):]
	case strings.HasPrefix(s, "text:"):
		method, rest = "text", s[len("text:"):]
	default:
		return nil, fmt.Errorf("CA %q: unknown method (want fixed:r:, fixed: or text:)", s)
	}
	if !strings.Contains(rest, ":") {
		return nil, fmt.Errorf("CA %q: no hash algorithm", s)
	}
	h, err := nixhash.ParseAny(rest, nil)
	if err != nil {
		return nil, fmt.Errorf("CA %q: %v", s, err)
	}
	types := map[string]map[nixhash.Algorithm]storeclient.CAHash{
		"nar": {nixhash.SHA256: storepb.NARInfo_CA_NAR_SHA256, nixhash.SHA1: storepb.NARInfo_CA_NAR_SHA1,
			nixhash.SHA512: storepb.NARInfo_CA_NAR_SHA512, nixhash.MD5: storepb.NARInfo_CA_NAR_MD5},
		"flat": {nixhash.SHA256: storepb.NARInfo_CA_FLAT_SHA256, nixhash.SHA1: storepb.NARInfo_CA_FLAT_SHA1,
			nixhash.SHA512: storepb.NARInfo_CA_FLAT_SHA512, nixhash.MD5: storepb.NARInfo_CA_FLAT_MD5},
		"text": {nixhash.SHA256: storepb.NARInfo_CA_TEXT_SHA256},
	}
	t, ok := types[method][h.Algo()]
	if !ok {
		return nil, fmt.Errorf("CA %q: %s is not a valid hash for %s", s, h.Algo(), method)
	}
	return &storeclient.ContentAddress{Type: t, Digest: slices.Clone(h.Digest())}, nil
}

// errCANotVerifiable marks content addresses storefs cannot check against
// the content (hashes other than sha256); such paths need a signature.
var errCANotVerifiable = errors.New("content address cannot be verified here")

// checkCAPath checks that p's store path is the one its content address,
// name and references give (Nix's makeFixedOutputPath / makeTextPath), so
// that a path whose content is verified against the CA needs no
// signature. It returns errCANotVerifiable for hash kinds the content is
// not checked against.
func checkCAPath(p *storeclient.PathInfo) error {
	ca := p.CA
	var refs []string
	self := false
	for _, r := range p.References {
		if r.Digest == p.StorePath.Digest && r.Name == p.StorePath.Name {
			self = true
			continue
		}
		refs = append(refs, r.Absolute())
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	var typ string
	var hash string
	if ca.Type != storepb.NARInfo_CA_NAR_SHA256 && !needsFlatHash(ca) {
		return errCANotVerifiable
	}
	if len(ca.Digest) != sha256.Size {
		return fmt.Errorf("CA digest has %d bytes, want %d", len(ca.Digest), sha256.Size)
	}
	switch ca.Type {
	case storepb.NARInfo_CA_NAR_SHA256:
		if [sha256.Size]byte(ca.Digest) != p.NarSHA256 {
			return errors.New("CA fixed:r:sha256 differs from NarHash")
		}
		typ, hash = "source", "sha256:"+hex.EncodeToString(ca.Digest)
	case storepb.NARInfo_CA_TEXT_SHA256:
		if self {
			return errors.New("a text path cannot refer to itself")
		}
		typ, hash = "text", "sha256:"+hex.EncodeToString(ca.Digest)
	case storepb.NARInfo_CA_FLAT_SHA256:
		if len(refs) > 0 || self {
			return errors.New("a flat fixed-output path cannot have references")
		}
		inner := sha256.Sum256([]byte("fixed:out:sha256:" + hex.EncodeToString(ca.Digest) + ":"))
		typ, hash = "output:out", "sha256:"+hex.EncodeToString(inner[:])
	default:
		return errCANotVerifiable
	}
	if typ != "output:out" {
		for _, r := range refs {
			typ += ":" + r
		}
		if self {
			typ += ":self"
		}
	}
	s := typ + ":" + hash + ":" + storeclient.StoreDir + ":" + p.StorePath.Name
	h := sha256.Sum256([]byte(s))
	var d storeclient.StorePathDigest
	for i, b := range h {
		d[i%storeclient.StorePathDigestSize] ^= b
	}
	if d != p.StorePath.Digest {
		return fmt.Errorf("the content address gives store path hash %s, not %s", d, p.StorePath.Digest)
	}
	return nil
}

// needsFlatHash reports whether the content must be checked against a
// sha256 of the single file's contents (flat and text CAs).
func needsFlatHash(ca *storeclient.ContentAddress) bool {
	return ca != nil && (ca.Type == storepb.NARInfo_CA_FLAT_SHA256 || ca.Type == storepb.NARInfo_CA_TEXT_SHA256)
}

package binarycache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/nar"
)

// ErrBadNarinfo is wrapped by errors about a narinfo that cannot be used:
// malformed, for another path, or with hashes of an unsupported kind.
var ErrBadNarinfo = errors.New("bad narinfo")

// maxNarinfoSize bounds what is read of a .narinfo (real ones are a few
// hundred bytes, plus one line per reference).
const maxNarinfoSize = 4 << 20

// NarInfo is a checked .narinfo: the PathInfo it describes (without a root
// node, which comes from the NAR) and where and how its NAR is stored.
type NarInfo struct {
	Info        *storeclient.PathInfo
	URL         string // relative to the cache, cleaned; never absolute or above it
	Compression string // none, xz, zstd or bzip2
	FileSize    uint64 // 0: not given
	FileSHA256  *[sha256.Size]byte
}

// ParseNarInfo parses and checks a .narinfo that should describe the store
// path with digest want.
func ParseNarInfo(b []byte, want storeclient.StorePathDigest) (*NarInfo, error) {
	if len(b) > maxNarinfoSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadNarinfo, maxNarinfoSize)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return nil, fmt.Errorf("%w: contains a NUL byte", ErrBadNarinfo)
	}
	ni, err := narinfo.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadNarinfo, err)
	}
	sp, err := storeclient.ParseStorePath(ni.StorePath)
	if err != nil {
		return nil, fmt.Errorf("%w: StorePath: %v", ErrBadNarinfo, err)
	}
	if sp.Digest != want {
		return nil, fmt.Errorf("%w: it is for %s, not the hash %s it was fetched for", ErrBadNarinfo, sp, want)
	}
	p := &storeclient.PathInfo{StorePath: sp, NarSize: ni.NarSize}
	if ni.NarSize == 0 {
		return nil, fmt.Errorf("%w: %s: NarSize is missing or 0", ErrBadNarinfo, sp)
	}
	if err := sha256Of(ni.NarHash, "NarHash", p.NarSHA256[:]); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadNarinfo, sp, err)
	}
	for _, r := range ni.References {
		rp, err := storeclient.ParseStorePathBasename(r)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: reference: %v", ErrBadNarinfo, sp, err)
		}
		p.References = append(p.References, rp)
	}
	if ni.Deriver != "" {
		dp, err := storeclient.ParseStorePathBasename(strings.TrimSuffix(ni.Deriver, ".drv"))
		if err != nil || !strings.HasSuffix(ni.Deriver, ".drv") {
			return nil, fmt.Errorf("%w: %s: Deriver %q is not a .drv store path", ErrBadNarinfo, sp, ni.Deriver)
		}
		p.Deriver = &dp
	}
	for _, s := range ni.Signatures {
		p.Signatures = append(p.Signatures, storeclient.Signature{Name: s.Name, Data: s.Data})
	}
	if ni.CA != "" {
		ca, err := ParseContentAddress(ni.CA)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadNarinfo, sp, err)
		}
		p.CA = ca
	}
	out := &NarInfo{Info: p, Compression: ni.Compression, FileSize: ni.FileSize}
	if !nar.Compression(ni.Compression).Supported() {
		return nil, fmt.Errorf("%w: %s: compression %q is not supported (%s)", ErrBadNarinfo, sp, ni.Compression, nar.SupportedCompressions)
	}
	if ni.FileHash != nil {
		var fh [sha256.Size]byte
		if err := sha256Of(ni.FileHash, "FileHash", fh[:]); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadNarinfo, sp, err)
		}
		out.FileSHA256 = &fh
	}
	if ni.Compression == "none" {
		if out.FileSize != 0 && out.FileSize != p.NarSize {
			return nil, fmt.Errorf("%w: %s: uncompressed, but FileSize %d != NarSize %d", ErrBadNarinfo, sp, out.FileSize, p.NarSize)
		}
		if out.FileSHA256 != nil && *out.FileSHA256 != p.NarSHA256 {
			return nil, fmt.Errorf("%w: %s: uncompressed, but FileHash != NarHash", ErrBadNarinfo, sp)
		}
	}
	if out.URL, err = cleanNarURL(ni.URL); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadNarinfo, sp, err)
	}
	return out, nil
}

func sha256Of(h *nixhash.HashWithEncoding, field string, dst []byte) error {
	if h == nil {
		return fmt.Errorf("%s is missing", field)
	}
	if h.Algo() != nixhash.SHA256 {
		return fmt.Errorf("%s is %s, only sha256 is supported", field, h.Algo())
	}
	if len(h.Digest()) != sha256.Size {
		return fmt.Errorf("%s has %d bytes", field, len(h.Digest()))
	}
	copy(dst, h.Digest())
	return nil
}

// cleanNarURL checks that a narinfo's URL names a file inside the cache: a
// relative path without "..", query or fragment, as Nix writes them
// (nar/<filehash>.nar.xz).
func cleanNarURL(u string) (string, error) {
	if u == "" {
		return "", errors.New("URL is missing")
	}
	if strings.ContainsAny(u, "?#\\:") || strings.HasPrefix(u, "/") {
		return "", fmt.Errorf("URL %q is not a relative path inside the cache", u)
	}
	c := path.Clean(u)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("URL %q points outside the cache", u)
	}
	return c, nil
}

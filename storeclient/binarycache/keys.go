package binarycache

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/storefs/storefs/storeclient"
)

// PublicKey is a named ed25519 key, written NAME:BASE64 as in Nix's
// trusted-public-keys.
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// String returns NAME:BASE64.
func (k PublicKey) String() string {
	return signature.PublicKey{Name: k.Name, Data: k.Key}.String()
}

// ParsePublicKeys parses keys separated by spaces or commas.
func ParsePublicKeys(s string) ([]PublicKey, error) {
	var keys []PublicKey
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
		pk, err := signature.ParsePublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("trusted public key %q: %w (want NAME:BASE64 as printed by nix-store --generate-binary-cache-key)", f, err)
		}
		keys = append(keys, PublicKey{Name: pk.Name, Key: pk.Data})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("trusted-public-keys is empty")
	}
	return keys, nil
}

// Fingerprint returns what a narinfo signature signs:
// `1;/nix/store/<hash>-<name>;sha256:<nixbase32 NAR hash>;<NAR size>;<references, comma-separated>`.
func Fingerprint(p *storeclient.PathInfo) string {
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(p.StorePath.Absolute())
	b.WriteString(";sha256:")
	b.WriteString(nixbase32.EncodeToString(p.NarSHA256[:]))
	b.WriteString(";")
	b.WriteString(strconv.FormatUint(p.NarSize, 10))
	b.WriteString(";")
	// Nix signs the references as a sorted set.
	refs := make([]string, len(p.References))
	for i, r := range p.References {
		refs[i] = r.Absolute()
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	b.WriteString(strings.Join(refs, ","))
	return b.String()
}

// VerifySignatures returns the name of a trusted key that made a valid
// signature of p's fingerprint, or "" if none did.
func VerifySignatures(p *storeclient.PathInfo, keys []PublicKey) string {
	fp := []byte(Fingerprint(p))
	for _, s := range p.Signatures {
		for _, k := range keys {
			if k.Name == s.Name && len(s.Data) == ed25519.SignatureSize && ed25519.Verify(k.Key, fp, s.Data) {
				return k.Name
			}
		}
	}
	return ""
}

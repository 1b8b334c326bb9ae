package storeclient

import (
	"crypto/sha256"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/storefs/storefs/storeclient/storepb"
)

// Signature is a narinfo signature: the key's name and the ed25519
// signature bytes.
type Signature struct {
	Name string
	Data []byte
}

// CAHash is the kind of a content address, numbered as in the protobuf.
type CAHash = storepb.NARInfo_CA_Hash

// ContentAddress is the CA field of a narinfo.
type ContentAddress struct {
	Type   CAHash
	Digest []byte
}

// PathInfo maps a store path to the root Node of its content, with the
// Nix metadata of a .narinfo.
type PathInfo struct {
	StorePath  StorePath
	Node       Node // the root; its name is StorePath.Basename()
	References []StorePath
	NarSize    uint64
	NarSHA256  [sha256.Size]byte
	Signatures []Signature
	Deriver    *StorePath // the .drv, without its ".drv" suffix, as in the protobuf
	CA         *ContentAddress
}

// Validate checks that p has a valid root node and store path.
func (p *PathInfo) Validate() error {
	if !p.Node.IsValid() {
		return invalid(RuleNodeUnset, "pathinfo %s has no root node", p.StorePath.Basename())
	}
	if err := checkStorePathName(p.StorePath.Name); err != nil {
		return err
	}
	for _, r := range p.References {
		if err := checkStorePathName(r.Name); err != nil {
			return fmt.Errorf("reference: %w", err)
		}
	}
	return nil
}

// Proto converts p to its protobuf form.
func (p *PathInfo) Proto() *storepb.PathInfo {
	pb := &storepb.PathInfo{
		Node: NodeProto(Name(p.StorePath.Basename()), p.Node),
		Narinfo: &storepb.NARInfo{
			NarSize:   p.NarSize,
			NarSha256: p.NarSHA256[:],
		},
	}
	for _, r := range p.References {
		pb.References = append(pb.References, r.Digest[:])
		pb.Narinfo.ReferenceNames = append(pb.Narinfo.ReferenceNames, r.Basename())
	}
	for _, s := range p.Signatures {
		pb.Narinfo.Signatures = append(pb.Narinfo.Signatures, &storepb.NARInfo_Signature{Name: s.Name, Data: s.Data})
	}
	if p.Deriver != nil {
		pb.Narinfo.Deriver = &storepb.StorePath{Name: p.Deriver.Name, Digest: p.Deriver.Digest[:]}
	}
	if p.CA != nil {
		pb.Narinfo.Ca = &storepb.NARInfo_CA{Type: p.CA.Type, Digest: p.CA.Digest}
	}
	return pb
}

// Marshal returns the protobuf encoding of p (deterministic; PathInfos are
// not content-addressed, so no canonical form is needed).
func (p *PathInfo) Marshal() []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.Proto())
	if err != nil {
		// Marshalling a message built from valid Go values cannot fail.
		panic(fmt.Sprintf("marshal pathinfo: %v", err))
	}
	return b
}

// UnmarshalPathInfo decodes and validates a PathInfo.
func UnmarshalPathInfo(b []byte) (*PathInfo, error) {
	var pb storepb.PathInfo
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, &ValidationError{Rule: RuleDecode, Detail: fmt.Sprintf("pathinfo: %v", err)}
	}
	return PathInfoFromProto(&pb)
}

// PathInfoFromProto validates a protobuf PathInfo and converts it. The root
// node's name must be a store path basename; NARInfo must be present, with
// one reference name per reference.
func PathInfoFromProto(pb *storepb.PathInfo) (*PathInfo, error) {
	name, node, err := NodeFromProto(pb.GetNode(), false)
	if err != nil {
		return nil, fmt.Errorf("pathinfo root node: %w", err)
	}
	sp, err := ParseStorePathBasename(string(name))
	if err != nil {
		return nil, fmt.Errorf("pathinfo root node name: %w", err)
	}
	ni := pb.GetNarinfo()
	if ni == nil {
		return nil, invalid(RulePathInfo, "pathinfo %s has no narinfo", sp.Basename())
	}
	p := &PathInfo{StorePath: sp, Node: node, NarSize: ni.GetNarSize()}
	if len(ni.GetNarSha256()) != sha256.Size {
		return nil, invalid(RulePathInfo, "pathinfo %s: nar_sha256 has %d bytes, want %d", sp.Basename(), len(ni.GetNarSha256()), sha256.Size)
	}
	copy(p.NarSHA256[:], ni.GetNarSha256())
	refs, names := pb.GetReferences(), ni.GetReferenceNames()
	if len(refs) != len(names) {
		return nil, invalid(RulePathInfo, "pathinfo %s: %d references but %d reference names", sp.Basename(), len(refs), len(names))
	}
	for i, r := range refs {
		rp, err := ParseStorePathBasename(names[i])
		if err != nil {
			return nil, fmt.Errorf("pathinfo %s reference %d: %w", sp.Basename(), i, err)
		}
		if string(rp.Digest[:]) != string(r) {
			return nil, invalid(RulePathInfo, "pathinfo %s: reference %d digest does not match its name %s", sp.Basename(), i, names[i])
		}
		p.References = append(p.References, rp)
	}
	for _, s := range ni.GetSignatures() {
		p.Signatures = append(p.Signatures, Signature{Name: s.GetName(), Data: s.GetData()})
	}
	if d := ni.GetDeriver(); d != nil {
		if len(d.GetDigest()) != StorePathDigestSize {
			return nil, invalid(RulePathInfo, "pathinfo %s: deriver digest has %d bytes", sp.Basename(), len(d.GetDigest()))
		}
		dp, err := NewStorePath(StorePathDigest(d.GetDigest()), d.GetName())
		if err != nil {
			return nil, fmt.Errorf("pathinfo %s deriver: %w", sp.Basename(), err)
		}
		p.Deriver = &dp
	}
	if ca := ni.GetCa(); ca != nil {
		p.CA = &ContentAddress{Type: ca.GetType(), Digest: ca.GetDigest()}
	}
	return p, nil
}

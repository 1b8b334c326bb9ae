package storeclient

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/storefs/storefs/storeclient/castorepb"
)

// Directory is an immutable set of named entries, kept as one list sorted by
// the raw bytes of the names (the three per-kind lists exist only on the
// wire). It is addressed by the BLAKE3 digest of its canonical encoding.
type Directory struct {
	entries []Entry
	size    uint64
}

// NewDirectory validates entries and returns them as a Directory. The
// entries may come in any order; names must be unique and every node valid.
// The Directory keeps its own copy of the slice.
func NewDirectory(entries ...Entry) (*Directory, error) {
	es := slices.Clone(entries)
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(string(a.Name), string(b.Name)) })
	for i := range es {
		if err := CheckName(es[i].Name); err != nil {
			return nil, err
		}
		if !es[i].Node.IsValid() {
			return nil, invalid(RuleNodeUnset, "entry %q has no node", string(es[i].Name))
		}
		if i > 0 && es[i].Name == es[i-1].Name {
			return nil, invalid(RuleUnique, "name %q appears twice", string(es[i].Name))
		}
	}
	return newSortedDirectory(es)
}

// newSortedDirectory computes the size of entries that are already sorted,
// unique and valid.
func newSortedDirectory(es []Entry) (*Directory, error) {
	size, err := sumSize(es, 2)
	if err != nil {
		return nil, err
	}
	return &Directory{entries: es, size: size}, nil
}

// sumSize adds perEntry for every entry plus the size of every directory
// entry, failing on overflow.
func sumSize(es []Entry, perEntry uint64) (uint64, error) {
	var total uint64
	for _, e := range es {
		add := perEntry
		if e.Node.kind == KindDirectory {
			var carry uint64
			add, carry = bits.Add64(add, e.Node.size, 0)
			if carry != 0 {
				return 0, invalid(RuleSize, "size of %q overflows uint64", string(e.Name))
			}
		}
		var carry uint64
		total, carry = bits.Add64(total, add, 0)
		if carry != 0 {
			return 0, invalid(RuleSize, "directory size overflows uint64")
		}
	}
	return total, nil
}

// Entries returns the entries sorted by name. The slice belongs to the
// Directory: callers must not modify it.
func (d *Directory) Entries() []Entry { return d.entries }

// Len returns the number of entries.
func (d *Directory) Len() int { return len(d.entries) }

// Size returns the Directory's size: the sum over its entries of 2, plus
// the child's size for a directory entry (castore.md "Directory size").
func (d *Directory) Size() uint64 { return d.size }

// LegacySize returns the size under the rule of tvix data written before
// 2024-08 (1 per entry plus the children's sizes). It is accepted only
// behind an explicit compatibility option.
func (d *Directory) LegacySize() (uint64, error) { return sumSize(d.entries, 1) }

// Lookup finds the entry called name. It returns the entry's index in
// Entries and whether it was found.
func (d *Directory) Lookup(name string) (Entry, int, bool) {
	i, ok := slices.BinarySearchFunc(d.entries, name, func(e Entry, n string) int {
		return strings.Compare(string(e.Name), n)
	})
	if !ok {
		return Entry{}, i, false
	}
	return d.entries[i], i, true
}

// Marshal returns the canonical encoding: standard proto3 with fields in
// number order, default values omitted and no unknown fields.
func (d *Directory) Marshal() []byte {
	var b []byte
	for _, kind := range [...]NodeKind{KindDirectory, KindFile, KindSymlink} {
		for _, e := range d.entries {
			if e.Node.kind != kind {
				continue
			}
			b = protowire.AppendTag(b, protowire.Number(kind), protowire.BytesType)
			b = protowire.AppendBytes(b, appendEntry(nil, e.Name, e.Node))
		}
	}
	return b
}

// appendEntry appends the canonical encoding of a DirectoryNode, FileNode
// or SymlinkNode message (without its enclosing tag).
func appendEntry(b []byte, name Name, n Node) []byte {
	if name != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, string(name))
	}
	switch n.kind {
	case KindDirectory, KindFile:
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, n.digest[:])
		if n.size != 0 {
			b = protowire.AppendTag(b, 3, protowire.VarintType)
			b = protowire.AppendVarint(b, n.size)
		}
		if n.executable {
			b = protowire.AppendTag(b, 4, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
	case KindSymlink:
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, string(n.target))
	}
	return b
}

// Digest returns the BLAKE3 digest of the canonical encoding.
func (d *Directory) Digest() Digest {
	return HashBytes(d.Marshal())
}

// UnmarshalDirectory decodes and validates a Directory. Unknown fields are
// dropped; every rule of castore.md is checked.
func UnmarshalDirectory(b []byte) (*Directory, error) {
	var pb castorepb.Directory
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, &ValidationError{Rule: RuleDecode, Detail: fmt.Sprintf("directory: %v", err)}
	}
	return DirectoryFromProto(&pb)
}

// DirectoryFromProto validates a protobuf Directory and converts it.
func DirectoryFromProto(pb *castorepb.Directory) (*Directory, error) {
	es := make([]Entry, 0, len(pb.GetDirectories())+len(pb.GetFiles())+len(pb.GetSymlinks()))
	var err error
	add := func(kind NodeKind, i int, rawName []byte, node func() (Node, error)) {
		if err != nil {
			return
		}
		if err = CheckName(rawName); err != nil {
			return
		}
		name := Name(rawName)
		if i > 0 {
			prev := es[len(es)-1].Name
			if prev >= name {
				err = invalid(RuleSorted, "%s %q does not sort after %q", kind, string(name), string(prev))
				return
			}
		}
		var n Node
		if n, err = node(); err != nil {
			err = fmt.Errorf("%s %q: %w", kind, string(name), err)
			return
		}
		es = append(es, Entry{Name: name, Node: n})
	}
	for i, c := range pb.GetDirectories() {
		add(KindDirectory, i, c.GetName(), func() (Node, error) { return directoryNodeFromProto(c) })
	}
	for i, c := range pb.GetFiles() {
		add(KindFile, i, c.GetName(), func() (Node, error) { return fileNodeFromProto(c) })
	}
	for i, c := range pb.GetSymlinks() {
		add(KindSymlink, i, c.GetName(), func() (Node, error) { return symlinkNodeFromProto(c) })
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(string(a.Name), string(b.Name)) })
	for i := 1; i < len(es); i++ {
		if es[i].Name == es[i-1].Name {
			return nil, invalid(RuleUnique, "name %q appears in two lists", string(es[i].Name))
		}
	}
	return newSortedDirectory(es)
}

func digestField(b []byte) (Digest, error) {
	if len(b) != DigestSize {
		return Digest{}, invalid(RuleDigestLength, "digest has %d bytes, want %d", len(b), DigestSize)
	}
	return Digest(b), nil
}

func directoryNodeFromProto(c *castorepb.DirectoryNode) (Node, error) {
	d, err := digestField(c.GetDigest())
	if err != nil {
		return Node{}, err
	}
	return DirectoryNode(d, c.GetSize()), nil
}

func fileNodeFromProto(c *castorepb.FileNode) (Node, error) {
	d, err := digestField(c.GetDigest())
	if err != nil {
		return Node{}, err
	}
	return FileNode(d, c.GetSize(), c.GetExecutable()), nil
}

func symlinkNodeFromProto(c *castorepb.SymlinkNode) (Node, error) {
	t, err := NewSymlinkTarget(c.GetTarget())
	if err != nil {
		return Node{}, err
	}
	return SymlinkNode(t), nil
}

// Proto converts d to its protobuf form.
func (d *Directory) Proto() *castorepb.Directory {
	pb := &castorepb.Directory{}
	for _, e := range d.entries {
		switch e.Node.kind {
		case KindDirectory:
			pb.Directories = append(pb.Directories, &castorepb.DirectoryNode{Name: []byte(e.Name), Digest: e.Node.digest[:], Size: e.Node.size})
		case KindFile:
			pb.Files = append(pb.Files, &castorepb.FileNode{Name: []byte(e.Name), Digest: e.Node.digest[:], Size: e.Node.size, Executable: e.Node.executable})
		case KindSymlink:
			pb.Symlinks = append(pb.Symlinks, &castorepb.SymlinkNode{Name: []byte(e.Name), Target: []byte(e.Node.target)})
		}
	}
	return pb
}

// NodeProto converts a named node (a PathInfo root, or an anonymous node
// when name is "") to its protobuf form.
func NodeProto(name Name, n Node) *castorepb.Node {
	switch n.kind {
	case KindDirectory:
		return &castorepb.Node{Node: &castorepb.Node_Directory{Directory: &castorepb.DirectoryNode{Name: []byte(name), Digest: n.digest[:], Size: n.size}}}
	case KindFile:
		return &castorepb.Node{Node: &castorepb.Node_File{File: &castorepb.FileNode{Name: []byte(name), Digest: n.digest[:], Size: n.size, Executable: n.executable}}}
	case KindSymlink:
		return &castorepb.Node{Node: &castorepb.Node_Symlink{Symlink: &castorepb.SymlinkNode{Name: []byte(name), Target: []byte(n.target)}}}
	}
	return &castorepb.Node{}
}

// NodeFromProto validates a protobuf Node. If anonymous is true the node
// must have an empty name; otherwise its name must be a valid Name.
func NodeFromProto(pb *castorepb.Node, anonymous bool) (Name, Node, error) {
	var rawName []byte
	var n Node
	var err error
	switch c := pb.GetNode().(type) {
	case *castorepb.Node_Directory:
		rawName = c.Directory.GetName()
		n, err = directoryNodeFromProto(c.Directory)
	case *castorepb.Node_File:
		rawName = c.File.GetName()
		n, err = fileNodeFromProto(c.File)
	case *castorepb.Node_Symlink:
		rawName = c.Symlink.GetName()
		n, err = symlinkNodeFromProto(c.Symlink)
	default:
		return "", Node{}, invalid(RuleNodeUnset, "node has no directory, file or symlink set")
	}
	if err != nil {
		return "", Node{}, err
	}
	if anonymous {
		if len(rawName) != 0 {
			return "", Node{}, invalid(RuleAnonymousName, "anonymous node has name %q", string(rawName))
		}
		return "", n, nil
	}
	name, err := NewName(rawName)
	if err != nil {
		return "", Node{}, err
	}
	return name, n, nil
}

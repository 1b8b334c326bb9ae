package storeclient

import "fmt"

// NodeKind says which of the three entry kinds a Node is.
type NodeKind uint8

// The node kinds. The zero value is not a valid kind.
const (
	KindInvalid NodeKind = iota
	KindDirectory
	KindFile
	KindSymlink
)

func (k NodeKind) String() string {
	switch k {
	case KindDirectory:
		return "directory"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	}
	return "invalid"
}

// Node is an entry without its name: a directory (digest of a Directory and
// the Directory's size), a regular file (digest of its content blob, its
// length and the executable bit) or a symlink (its target). Node is a small
// comparable value; the zero Node is invalid.
type Node struct {
	kind       NodeKind
	executable bool
	digest     Digest
	size       uint64
	target     SymlinkTarget
}

// DirectoryNode returns a node for the Directory with the given digest and
// size (see Directory.Size).
func DirectoryNode(digest Digest, size uint64) Node {
	return Node{kind: KindDirectory, digest: digest, size: size}
}

// FileNode returns a node for a regular file whose content blob has the
// given digest and length.
func FileNode(digest Digest, size uint64, executable bool) Node {
	return Node{kind: KindFile, digest: digest, size: size, executable: executable}
}

// SymlinkNode returns a node for a symlink to target.
func SymlinkNode(target SymlinkTarget) Node {
	return Node{kind: KindSymlink, target: target}
}

// Kind returns the node's kind.
func (n Node) Kind() NodeKind { return n.kind }

// IsValid reports whether n was made by one of the constructors.
func (n Node) IsValid() bool { return n.kind != KindInvalid }

// Digest returns the digest of a directory's Directory or a file's blob, and
// the zero digest for a symlink.
func (n Node) Digest() Digest { return n.digest }

// Size returns a file's content length or a directory's Directory size, and
// 0 for a symlink.
func (n Node) Size() uint64 { return n.size }

// Executable reports whether a file node is executable.
func (n Node) Executable() bool { return n.executable }

// Target returns a symlink's target, and "" for other kinds.
func (n Node) Target() SymlinkTarget { return n.target }

func (n Node) String() string {
	switch n.kind {
	case KindDirectory:
		return fmt.Sprintf("directory{%s, size %d}", n.digest, n.size)
	case KindFile:
		return fmt.Sprintf("file{%s, size %d, executable %t}", n.digest, n.size, n.executable)
	case KindSymlink:
		return fmt.Sprintf("symlink{%q}", string(n.target))
	}
	return "invalid node"
}

// Entry is a named Node inside a Directory.
type Entry struct {
	Name Name
	Node Node
}

package vfs

import (
	"encoding/binary"
	"io/fs"
	"time"

	"github.com/zeebo/blake3"

	"github.com/storefs/storefs/storeclient"
)

// RootIno is the inode number of the root directory.
const RootIno = 1

// place says where a Node sits, which decides its handle.
type place uint8

const (
	placeInvalid place = iota
	placeRoot          // the filesystem root
	placeTop           // the root node of a PathInfo, an entry of the filesystem root
	placeChild         // an entry of a Directory
)

// Node is one node of the filesystem: the root, the root node of a PathInfo,
// or an entry below one. It is a small immutable value: copy it, compare its
// Ino, keep it as long as you like; it holds no resources and stays valid
// across restarts in the sense that its Handle resolves to an equal Node on
// any FS over the same store. The zero Node is invalid.
type Node struct {
	node  storeclient.Node
	place place
	ino   uint64

	// ref is, for placeTop, the store path digest of the PathInfo (first 20
	// bytes); for placeChild, the digest of the Directory holding the
	// entry. With parentSize and index it resolves a symlink's handle.
	ref        [32]byte
	parentSize uint64
	index      uint32
}

// IsValid reports whether n is a node (not the zero Node).
func (n Node) IsValid() bool { return n.place != placeInvalid }

// IsRoot reports whether n is the filesystem root.
func (n Node) IsRoot() bool { return n.place == placeRoot }

// Kind returns KindDirectory for the root and directories, KindFile or
// KindSymlink otherwise.
func (n Node) Kind() storeclient.NodeKind {
	if n.place == placeRoot {
		return storeclient.KindDirectory
	}
	return n.node.Kind()
}

// IsDir reports whether n is a directory (or the root).
func (n Node) IsDir() bool { return n.Kind() == storeclient.KindDirectory }

// StoreNode returns the castore node behind n; the zero Node for the root.
func (n Node) StoreNode() storeclient.Node { return n.node }

// Ino returns n's inode number: 1 for the root, otherwise a pure function of
// the content (see "Inode numbers" in the package documentation). It is
// never 0, and 1 only for the root.
func (n Node) Ino() uint64 { return n.ino }

// Per-kind salts keep a directory, a plain file, an executable file and a
// symlink with the same 64-bit digest prefix apart (the empty Directory and
// the empty blob have the same digest).
const (
	saltDir     = 0x9e3779b97f4a7c15
	saltFile    = 0xbf58476d1ce4e5b9
	saltExec    = 0x94d049bb133111eb
	saltSymlink = 0xd6e8feb86659fd93
)

// inoOf computes the content inode of a castore node.
func inoOf(sn storeclient.Node) uint64 {
	var ino uint64
	switch sn.Kind() {
	case storeclient.KindDirectory:
		d := sn.Digest()
		ino = binary.LittleEndian.Uint64(d[:8]) ^ saltDir
	case storeclient.KindFile:
		d := sn.Digest()
		salt := uint64(saltFile)
		if sn.Executable() {
			salt = saltExec
		}
		ino = binary.LittleEndian.Uint64(d[:8]) ^ salt
	case storeclient.KindSymlink:
		sum := blake3.Sum256([]byte(sn.Target()))
		ino = binary.LittleEndian.Uint64(sum[:8]) ^ saltSymlink
	}
	if ino <= RootIno {
		ino += 2 // 0 and 1 are not for content
	}
	return ino
}

func rootNode() Node { return Node{place: placeRoot, ino: RootIno} }

func topNode(sp storeclient.StorePathDigest, sn storeclient.Node) Node {
	n := Node{node: sn, place: placeTop, ino: inoOf(sn)}
	copy(n.ref[:], sp[:])
	return n
}

func childNode(parent storeclient.Node, index int, sn storeclient.Node) Node {
	return Node{node: sn, place: placeChild, ino: inoOf(sn), ref: parent.Digest(), parentSize: parent.Size(), index: uint32(index)}
}

// Attr is what stat shows for a node (docs/filesystem.md "Attributes").
type Attr struct {
	Ino    uint64
	Mode   fs.FileMode // type bits and permissions, as io/fs
	Size   uint64
	Nlink  uint32
	UID    uint32
	GID    uint32
	Blocks uint64    // 512-byte blocks
	Mtime  time.Time // also atime and ctime
}

// Mtime is the modification, access and change time of every node: 1 s
// after the epoch, as in a real /nix/store.
var mtime = time.Unix(1, 0)

// Unix file type bits (stat.h); the same on every Unix storefs serves.
const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

// UnixMode returns Mode as a Unix st_mode (S_IFDIR|0555 and so on).
func (a Attr) UnixMode() uint32 {
	m := uint32(a.Mode.Perm())
	switch {
	case a.Mode.IsDir():
		m |= sIFDIR
	case a.Mode&fs.ModeSymlink != 0:
		m |= sIFLNK
	default:
		m |= sIFREG
	}
	return m
}

// Attr returns n's attributes. It needs no store call: everything comes
// from the node itself. The zero Node has the zero Attr.
func (f *FS) Attr(n Node) Attr {
	a := Attr{Ino: n.ino, UID: f.opts.UID, GID: f.opts.GID, Mtime: mtime}
	switch {
	case n.place == placeInvalid:
		return Attr{}
	case n.place == placeRoot:
		a.Mode = fs.ModeDir | 0o555
		a.Nlink = 2
	case n.node.Kind() == storeclient.KindDirectory:
		a.Mode = fs.ModeDir | 0o555
		a.Nlink = 2
		a.Size = n.node.Size()
	case n.node.Kind() == storeclient.KindFile:
		a.Mode = 0o444
		if n.node.Executable() {
			a.Mode = 0o555
		}
		a.Nlink = 1
		a.Size = n.node.Size()
		a.Blocks = (a.Size + 511) / 512
	case n.node.Kind() == storeclient.KindSymlink:
		a.Mode = fs.ModeSymlink | 0o444
		a.Nlink = 1
		a.Size = uint64(len(n.node.Target()))
	}
	return a
}

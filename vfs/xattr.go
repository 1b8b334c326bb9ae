package vfs

import (
	"errors"
	"syscall"

	"github.com/storefs/storefs/storeclient"
)

// The extended attributes vfs serves (docs/filesystem.md).
const (
	XattrDirectoryDigest = "user.snix.castore.directory.digest"
	XattrBlobDigest      = "user.snix.castore.blob.digest"
)

// xattrName returns the one attribute name n carries, or "".
func (f *FS) xattrName(n Node) string {
	if f.opts.NoXAttrs || n.place == placeRoot || n.place == placeInvalid {
		return ""
	}
	switch n.node.Kind() {
	case storeclient.KindDirectory:
		return XattrDirectoryDigest
	case storeclient.KindFile:
		return XattrBlobDigest
	}
	return ""
}

// Getxattr copies the value of attribute name of n into dst, as getxattr(2):
// with an empty dst it returns the value's length; a dst too short is
// ERANGE; an attribute n does not have is ENODATA. Values are the digest in
// blake3-<base64> form, without NUL.
func (f *FS) Getxattr(n Node, name string, dst []byte) (int, error) {
	t0 := f.opStart(OpGetxattr)
	size, err := f.getxattr(n, name, dst)
	f.opEnd(OpGetxattr, t0, 0, err)
	return size, err
}

func (f *FS) getxattr(n Node, name string, dst []byte) (int, error) {
	if name == "" || name != f.xattrName(n) {
		return 0, newError("getxattr", name, syscall.ENODATA, nil)
	}
	d := n.node.Digest()
	return copyXattr("getxattr", name, dst, d.String())
}

// Listxattr copies the NUL-terminated names of n's attributes into dst, as
// listxattr(2): an empty dst returns the length needed; too short is ERANGE.
func (f *FS) Listxattr(n Node, dst []byte) (int, error) {
	t0 := f.opStart(OpListxattr)
	size, err := f.listxattr(n, dst)
	f.opEnd(OpListxattr, t0, 0, err)
	return size, err
}

func (f *FS) listxattr(n Node, dst []byte) (int, error) {
	name := f.xattrName(n)
	if name == "" {
		return 0, nil
	}
	return copyXattr("listxattr", "", dst, name+"\x00")
}

// Xattrs returns the names of n's attributes (for protocols that list them
// as strings).
func (f *FS) Xattrs(n Node) []string {
	if name := f.xattrName(n); name != "" {
		return []string{name}
	}
	return nil
}

func copyXattr(op, name string, dst []byte, v string) (int, error) {
	if len(dst) == 0 {
		return len(v), nil
	}
	if len(dst) < len(v) {
		return 0, newError(op, name, syscall.ERANGE, errors.New("buffer too small"))
	}
	return copy(dst, v), nil
}

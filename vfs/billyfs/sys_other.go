//go:build !unix

package billyfs

import "github.com/storefs/storefs/vfs"

func sys(a vfs.Attr) any { return &a }

//go:build !linux

package vfs

import "os"

// adviseWillNeed does nothing where posix_fadvise is not offered (opening
// the file has at least brought its inode in).
func adviseWillNeed(*os.File, int64, int64) {}

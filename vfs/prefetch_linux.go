package vfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// adviseWillNeed asks the kernel to read [off, off+size) of f into its
// page cache in the background. It is a hint: a failure changes nothing
// but the speed of the reads that follow.
func adviseWillNeed(f *os.File, off, size int64) {
	_ = unix.Fadvise(int(f.Fd()), off, size, unix.FADV_WILLNEED)
}

package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts writing n bytes of f from off to disk, without
// waiting (sync_file_range(2) with SYNC_FILE_RANGE_WRITE). It is a hint:
// durability still comes from syncBlobs, so an error is ignored.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// readahead asks the kernel to read n bytes of f from off into the page
// cache in the background (posix_fadvise WILLNEED). The kernel reads at
// most its readahead window per call, so a long range is asked for in
// pieces. It is a hint: an error is ignored.
func readahead(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for n > 0 {
			step := min(n, readaheadStep)
			unix.Fadvise(int(fd), off, step, unix.FADV_WILLNEED)
			off, n = off+step, n-step
		}
	})
}

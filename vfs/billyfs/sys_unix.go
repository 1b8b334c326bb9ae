//go:build unix

package billyfs

import (
	"syscall"

	"github.com/storefs/storefs/vfs"
)

// sys fills a Stat_t; field types differ between platforms, hence set.
func sys(a vfs.Attr) any {
	st := &syscall.Stat_t{}
	set(&st.Ino, a.Ino)
	set(&st.Nlink, uint64(a.Nlink))
	set(&st.Mode, uint64(a.UnixMode()))
	set(&st.Uid, uint64(a.UID))
	set(&st.Gid, uint64(a.GID))
	set(&st.Size, a.Size)
	set(&st.Blocks, a.Blocks)
	set(&st.Blksize, 4096)
	return st
}

func set[T ~uint16 | ~uint32 | ~uint64 | ~int32 | ~int64](dst *T, v uint64) { *dst = T(v) }

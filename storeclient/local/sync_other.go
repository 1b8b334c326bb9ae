//go:build unix && !linux

package local

import "golang.org/x/sys/unix"

// syncFilesystem flushes dirty data to disk. Without syncfs(2) this is a
// sync(2) of every filesystem.
func syncFilesystem(dir string) error {
	unix.Sync()
	return nil
}

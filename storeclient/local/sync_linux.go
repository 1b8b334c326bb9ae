package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFilesystem flushes every dirty file of the filesystem that holds dir
// to disk (syncfs(2)).
func syncFilesystem(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

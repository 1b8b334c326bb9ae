//go:build !linux

package importer

import (
	"errors"
	"fmt"
	"io"
)

// readSmallFile reads the file at path, which the walk listed as a regular
// file of len(buf) bytes, whole into buf, and fails if it is no longer a
// regular file or no longer has exactly len(buf) bytes.
func readSmallFile(path string, buf []byte) error {
	f, err := openRegular(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.ReadFull(f, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errShrunk(path, uint64(len(buf)))
		}
		return fmt.Errorf("read %s: %w", quote(path), err)
	}
	return checkEOF(f, path, uint64(len(buf)))
}

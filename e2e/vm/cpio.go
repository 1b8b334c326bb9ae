package vm

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// Mode bits of cpio entries (the st_mode values the kernel expects).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

// cpioWriter writes an uncompressed "newc" cpio archive, the format the
// kernel unpacks into its initramfs. Archives may be concatenated: the
// kernel unpacks them one after another into the same tree.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

// dir adds a directory.
func (c *cpioWriter) dir(name string, perm uint32) {
	c.entry(name, modeDir|perm, 0, 0, nil)
}

// file adds a regular file.
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.entry(name, modeFile|perm, 0, 0, data)
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.entry(name, modeChar|perm, major, minor, nil)
}

// close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}

func (c *cpioWriter) entry(name string, mode, rmajor, rminor uint32, data []byte) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	nlink := uint32(1)
	if mode&modeDir != 0 {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if mode == 0 { // trailer
		ino = 0
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := c.w.Write(buf); err != nil {
		c.err = fmt.Errorf("vm: writing cpio entry %s: %w", name, err)
		return
	}
	if len(data) == 0 {
		return
	}
	if _, err := c.w.Write(data); err != nil {
		c.err = fmt.Errorf("vm: writing cpio entry %s: %w", name, err)
		return
	}
	if _, err := c.w.Write(make([]byte, pad4(len(data)))); err != nil {
		c.err = fmt.Errorf("vm: writing cpio entry %s: %w", name, err)
	}
}

// pad4 returns how many bytes bring n to a multiple of 4.
func pad4(n int) int { return (4 - n%4) % 4 }

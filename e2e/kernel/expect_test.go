package kernel_test

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/storefs/storefs/vfs"
)

// lsEntry is one line of "ls -la": what busybox prints of a stat.
type lsEntry struct {
	name     string
	mode     fs.FileMode
	nlink    uint64
	uid, gid uint32
	size     uint64
	blocks   uint64 // 512-byte blocks
	mtime    time.Time
	target   string // symlinks
}

// renderLsLa returns what busybox 1.35 "ls -la" prints for a directory
// with entries (including "." and ".."), in a guest with no user names,
// no time zone and the C locale: a "total" line of 1 KiB blocks, then one
// line per entry in byte order of the names, with bytes outside printable
// ASCII shown as '?'.
func renderLsLa(entries []lsEntry) (string, error) {
	entries = append([]lsEntry(nil), entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var b strings.Builder
	blocks := uint64(1) // busybox rounds up: (1 + sum) / 2
	for _, e := range entries {
		blocks += e.blocks
	}
	fmt.Fprintf(&b, "total %d\n", blocks/2)
	for _, e := range entries {
		// busybox shows the year instead of the time for files more than
		// six months old; the store's mtime is always 1970.
		if time.Since(e.mtime) < 200*24*time.Hour {
			return "", fmt.Errorf("%s: mtime %v is too recent to render", e.name, e.mtime)
		}
		mt := e.mtime.UTC()
		fmt.Fprintf(&b, "%-10s %4d %-8d %-8d %9d %s %5d %s", modeString(e.mode), e.nlink, e.uid, e.gid, e.size,
			mt.Format("Jan _2"), mt.Year(), printable(e.name))
		if e.mode&fs.ModeSymlink != 0 {
			fmt.Fprintf(&b, " -> %s", printable(e.target))
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// modeString is busybox's bb_mode_string for the types a store holds.
func modeString(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if m.Perm()&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	return string(b)
}

// printable replaces the bytes busybox does not print in the C locale.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// vfsEntry renders n's vfs attributes as an ls line named name.
func vfsEntry(fsys *vfs.FS, name string, n vfs.Node) (lsEntry, error) {
	a := fsys.Attr(n)
	e := lsEntry{name: name, mode: a.Mode, nlink: uint64(a.Nlink), uid: a.UID, gid: a.GID,
		size: a.Size, blocks: a.Blocks, mtime: a.Mtime}
	if a.Mode&fs.ModeSymlink != 0 {
		t, err := fsys.Readlink(n)
		if err != nil {
			return e, fmt.Errorf("readlink %s: %w", name, err)
		}
		e.target = t
	}
	return e, nil
}

// expectLsLa renders "ls -la" of the store directory rel (relative to the
// imported root) from the vfs attributes of it, its parent and its
// entries.
func (fx *fixture) expectLsLa(ctx context.Context, rel string) (string, error) {
	dir, err := fx.node(ctx, rel)
	if err != nil {
		return "", err
	}
	parent, err := fx.fsys.Walk(ctx, fx.storePath(rel)+"/..", false)
	if err != nil {
		return "", fmt.Errorf("vfs walk to the parent of %s: %w", rel, err)
	}
	var entries []lsEntry
	for name, n := range map[string]vfs.Node{".": dir, "..": parent} {
		e, err := vfsEntry(fx.fsys, name, n)
		if err != nil {
			return "", err
		}
		entries = append(entries, e)
	}
	list, err := fx.fsys.ReadDir(ctx, dir, 0, vfs.ReadDirAll)
	if err != nil {
		return "", fmt.Errorf("vfs readdir %s: %w", rel, err)
	}
	for _, de := range list {
		e, err := vfsEntry(fx.fsys, de.Name, de.Node)
		if err != nil {
			return "", err
		}
		entries = append(entries, e)
	}
	return renderLsLa(entries)
}

// statFormat is the busybox stat format of the stat-all check: name, raw
// mode (hex), size, blocks, links, owner, group, atime, mtime, ctime.
const statFormat = "%n|%f|%s|%b|%h|%u|%g|%X|%Y|%Z"

// expectStatAll renders, from vfs, what "find . -exec stat -c statFormat
// {} + | sort" prints in the imported root.
func (fx *fixture) expectStatAll(ctx context.Context) (string, error) {
	paths, err := fx.relPaths()
	if err != nil {
		return "", err
	}
	lines := make([]string, 0, len(paths))
	for _, rel := range paths {
		n, err := fx.node(ctx, rel)
		if err != nil {
			return "", err
		}
		a := fx.fsys.Attr(n)
		name := "."
		if rel != "." {
			name = "./" + rel
		}
		t := a.Mtime.Unix()
		lines = append(lines, fmt.Sprintf("%s|%x|%d|%d|%d|%d|%d|%d|%d|%d", name, a.UnixMode(), a.Size, a.Blocks,
			a.Nlink, a.UID, a.GID, t, t, t))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n", nil
}

// expectFind renders what "find . | sort" prints in the imported root,
// from the source tree.
func (fx *fixture) expectFind() (string, int, error) {
	paths, err := fx.relPaths()
	if err != nil {
		return "", 0, err
	}
	lines := make([]string, len(paths))
	for i, rel := range paths {
		lines[i] = "."
		if rel != "." {
			lines[i] = "./" + rel
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n", len(paths), nil
}

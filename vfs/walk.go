package vfs

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/storefs/storefs/storeclient"
)

// maxSymlinks is how many symlinks one Walk follows before ELOOP, as Linux.
const maxSymlinks = 40

// Walk resolves a slash-separated path relative to the root (a leading "/"
// is allowed; "", "." and "/" are the root). "." is skipped and ".." goes to
// the parent (the root's parent is the root). If follow is true a symlink in
// the last component is followed; symlinks in earlier components always are.
// A relative target is resolved from the link's directory; an absolute
// target under /nix/store/ from the root; any other absolute target is
// outside the store (ENOENT). More than 40 symlinks: ELOOP.
//
// Walk serves what takes paths (the CLI, NFS MOUNT, 9P attach names);
// kernels and protocol clients walk with Lookup themselves.
func (f *FS) Walk(ctx context.Context, path string, follow bool) (Node, error) {
	t0 := f.opStart(OpWalk)
	n, err := f.walk(ctx, path, follow)
	f.opEnd(OpWalk, t0, 0, err)
	return n, err
}

func (f *FS) walk(ctx context.Context, path string, follow bool) (Node, error) {
	stack := []Node{rootNode()} // the current node's ancestors and itself
	links := 0
	rest := path
	for {
		var comp string
		comp, rest = nextComponent(rest)
		if comp == "" && rest == "" {
			return stack[len(stack)-1], nil
		}
		if comp == "" {
			continue
		}
		cur := stack[len(stack)-1]
		if !cur.IsDir() {
			return Node{}, newError("walk", path, syscall.ENOTDIR, nil)
		}
		switch comp {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		n, err := f.lookup(ctx, cur, comp)
		if err != nil {
			return Node{}, wrapWalk(path, err)
		}
		last := strings.Trim(rest, "/") == ""
		if n.Kind() != storeclient.KindSymlink || (last && !follow) {
			stack = append(stack, n)
			continue
		}
		links++
		if links > maxSymlinks {
			return Node{}, newError("walk", path, syscall.ELOOP, nil)
		}
		target := string(n.node.Target())
		if strings.HasPrefix(target, "/") {
			inStore, ok := strings.CutPrefix(target, storeclient.StoreDir+"/")
			if !ok {
				return Node{}, newError("walk", path, syscall.ENOENT,
					errors.New("symlink "+comp+" points outside the store: "+target))
			}
			stack = stack[:1]
			target = inStore
		}
		rest = target + "/" + rest
	}
}

// nextComponent splits the first component off p.
func nextComponent(p string) (comp, rest string) {
	p = strings.TrimLeft(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}

func wrapWalk(path string, err error) error {
	var ve *Error
	if errors.As(err, &ve) {
		return &Error{Op: "walk", Name: path, Errno: ve.Errno, Err: err}
	}
	return backendError("walk", path, err)
}

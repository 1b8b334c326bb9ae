package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/storefs/storefs/protocols/fuse"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// mountedTree is one system of the FUSE workloads: a tree the same
// commands read, and how to take it down.
type mountedTree struct {
	name string
	peer bool
	root string // the corpus tree as this system shows it
	stop func()
}

// startStorefsFUSE mounts the local store in storeDir with protocols/fuse,
// in this process, and returns the imported tree in it. With passthrough
// false, reads go through the daemon (spliced from the blob files).
func startStorefsFUSE(ctx context.Context, env *Env, storeDir, storePath string, passthrough bool) (*mountedTree, error) {
	s, err := storeurl.Open(ctx, "local:"+storeDir, storeurl.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: env.Log})
	if err != nil {
		s.Close()
		return nil, err
	}
	mnt := filepath.Join(env.Scratch, "mnt-storefs")
	if passthrough {
		mnt += "-passthrough"
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		s.Close()
		return nil, err
	}
	opts := fuse.MountOptions{Options: fuse.Options{Logger: env.Log, NoPassthrough: !passthrough}}
	srv, err := fuse.Mount(mnt, fsys, opts)
	if err != nil {
		s.Close()
		return nil, err
	}
	name := "storefs (splice)"
	if passthrough {
		name = "storefs (passthrough)"
	}
	return &mountedTree{
		name: name,
		root: filepath.Join(mnt, strings.TrimPrefix(storePath, storeclient.StoreDir+"/")),
		stop: func() {
			if err := srv.Unmount(); err != nil {
				env.Log.Warn("unmount storefs", "err", err)
			}
			s.Close()
		},
	}, nil
}

// startSquashfuse builds a zstd squashfs image of tree and serves it with
// squashfuse_ll in the foreground.
func startSquashfuse(ctx context.Context, env *Env, tree string) (*mountedTree, error) {
	mksq, err := exec.LookPath("mksquashfs")
	if err != nil {
		return nil, errSkip("mksquashfs (squashfs-tools) is not installed")
	}
	sqfuse, err := exec.LookPath("squashfuse_ll")
	if err != nil {
		return nil, errSkip("squashfuse_ll (squashfuse) is not installed")
	}
	img := filepath.Join(env.Scratch, "tree.sqfs")
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, mksq, tree, img, "-comp", "zstd", "-noappend", "-no-progress", "-quiet").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mksquashfs: %w: %s", err, out)
	}
	env.Log.Info("squashfs image built", "took", time.Since(t0).Round(time.Millisecond))
	mnt := filepath.Join(env.Scratch, "mnt-squashfuse")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, sqfuse, "-f", img, mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		if err := unmountFUSE(mnt); err != nil {
			env.Log.Warn("unmount squashfuse_ll", "err", err)
			cmd.Process.Kill()
		}
		<-done
	}
	if err := waitMounted(mnt, done); err != nil {
		stop()
		return nil, fmt.Errorf("squashfuse_ll: %w: %s", err, stderr.String())
	}
	return &mountedTree{name: "squashfuse_ll 0.1.105 (zstd squashfs)", peer: true, root: mnt, stop: stop}, nil
}

// startErofs builds an uncompressed erofs image of tree and loop-mounts it
// with the kernel's erofs.
func startErofs(ctx context.Context, env *Env, tree string) (*mountedTree, error) {
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return nil, errSkip("mkfs.erofs (erofs-utils) is not installed")
	}
	img := filepath.Join(env.Scratch, "tree.erofs")
	if out, err := exec.CommandContext(ctx, mkfs, img, tree).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.erofs: %w: %s", err, out)
	}
	mnt := filepath.Join(env.Scratch, "mnt-erofs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "erofs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		return nil, errSkip(fmt.Sprintf("mount -t erofs -o loop: %v: %s", err, strings.TrimSpace(string(out))))
	}
	return &mountedTree{name: "kernel erofs (loop)", root: mnt, stop: func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			env.Log.Warn("umount erofs", "err", err, "out", string(out))
		}
	}}, nil
}

// unmountFUSE unmounts a FUSE mount.
func unmountFUSE(mnt string) error {
	if err := syscall.Unmount(mnt, 0); err == nil {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u: %w: %s", err, out)
	}
	return nil
}

// waitMounted waits until mnt is in /proc/self/mounts, or the server
// exits, or 30 s pass.
func waitMounted(mnt string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if inMounts(mnt) {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before mounting: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("not mounted after 30 s")
}

func inMounts(mnt string) bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 1 && fs[1] == mnt {
			return true
		}
	}
	return false
}

// dropCaches writes back dirty data and drops the page, dentry and inode
// caches (root only), so the next read is cold.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

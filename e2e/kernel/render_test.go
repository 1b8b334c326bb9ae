package kernel_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/e2e/e2etest"
	"github.com/storefs/storefs/e2e/vm"
)

// TestRenderLsLa checks the renderer of the expected "ls -la" text against
// busybox itself on a host directory with the same kinds of entries (and
// mtimes of 1970), so that a guest check fails only for what the guest
// saw.
func TestRenderLsLa(t *testing.T) {
	busybox := e2etest.NeedCommand(t, "busybox")
	parent := filepath.Join(t.TempDir(), "p")
	dir := filepath.Join(parent, "d")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub dir"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "ünï cödé"), 0o555))
	must(os.WriteFile(filepath.Join(dir, "a"), []byte("x"), 0o444))
	must(os.WriteFile(filepath.Join(dir, "exe"), make([]byte, 1<<20+3), 0o555))
	must(os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o444))
	must(os.Symlink("/nix/store/x-y/bin/z", filepath.Join(dir, "link")))
	must(os.Symlink("dangling", filepath.Join(dir, "日本")))
	epoch := []unix.Timespec{{Sec: 1}, {Sec: 1}}
	var entries []lsEntry
	names := []string{"sub dir", "ünï cödé", "a", "exe", ".hidden", "link", "日本", ".", ".."}
	for _, name := range names {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, name), epoch, unix.AT_SYMLINK_NOFOLLOW))
	}
	for _, name := range names {
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		must(err)
		st := fi.Sys().(*syscall.Stat_t)
		e := lsEntry{name: name, mode: fi.Mode(), nlink: st.Nlink, uid: st.Uid, gid: st.Gid,
			size: uint64(st.Size), blocks: uint64(st.Blocks), mtime: time.Unix(st.Mtim.Unix())}
		if fi.Mode()&os.ModeSymlink != 0 {
			e.target, err = os.Readlink(p)
			must(err)
		}
		entries = append(entries, e)
	}
	got, err := renderLsLa(entries)
	must(err)
	want, err := vm.ListLong(t.Context(), busybox, dir)
	must(err)
	if got != want {
		t.Errorf("rendered:\n%s\nbusybox ls -lan:\n%s", got, want)
	}
	if !strings.Contains(got, "lrwxrwxrwx") || !strings.Contains(got, "??n?? c??d??") {
		t.Errorf("the rendering lacks a symlink or an escaped name:\n%s", got)
	}
}

package server

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/storefs/storefs/config"
)

// QuickStart gives a configuration without any frontend the zero-setup
// set of `storefs serve`: NFS and 9P on free loopback ports and, when
// FUSE is usable here, a FUSE mount at DefaultMountpoint. It reports
// whether it changed cfg. A configuration with a frontend is left as it is.
func QuickStart(cfg *config.Config) bool {
	if cfg.HasFrontend() {
		return false
	}
	cfg.NFS.Listen = "127.0.0.1:0"
	cfg.NineP.Listen = "127.0.0.1:0"
	if FUSEUsable() {
		cfg.FUSE = []config.FUSEMount{{Mountpoint: DefaultMountpoint()}}
	}
	return true
}

// DefaultMountpoint is where QuickStart mounts: /run/storefs/mnt for root,
// else $XDG_RUNTIME_DIR/storefs/mnt, else storefs-UID/mnt in the temporary
// directory. A directory that does not exist is created at mount time and
// removed at unmount.
func DefaultMountpoint() string {
	if os.Geteuid() == 0 {
		return "/run/storefs/mnt"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "storefs", "mnt")
	}
	return filepath.Join(os.TempDir(), "storefs-"+strconv.Itoa(os.Geteuid()), "mnt")
}

// FUSEUsable reports whether this process can mount with FUSE: /dev/fuse
// opens, and the process is root or fusermount3 is installed.
func FUSEUsable() bool {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	if os.Geteuid() == 0 {
		return true
	}
	_, err = exec.LookPath("fusermount3")
	return err == nil
}

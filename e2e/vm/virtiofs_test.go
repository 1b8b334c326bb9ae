package vm

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
)

// virtiofsd is where Debian's qemu-system-common installs QEMU's C
// virtiofsd (not in PATH).
const virtiofsd = "/usr/lib/qemu/virtiofsd"

// TestVirtiofs proves Options.QEMUArgs and VirtiofsQEMUArgs: a tree shared
// by QEMU's virtiofsd (a stand-in for storefs' virtiofs backend) is
// mounted and read in the guest.
func TestVirtiofs(t *testing.T) {
	h := NeedHost(t)
	if _, err := os.Stat(virtiofsd); err != nil {
		e2etest.Missing(t, "virtiofsd (qemu-system-common) is not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		e2etest.Missing(t, "virtiofsd needs root for its namespace sandbox")
	}
	tree := makeTree(t)
	manifest, err := MD5Manifest(tree)
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	if err := filepath.WalkDir(tree, func(string, fs.DirEntry, error) error { entries++; return nil }); err != nil {
		t.Fatal(err)
	}
	sock := startVirtiofsd(t, tree)

	s := NewScript()
	s.MountVirtiofs("mount", VirtiofsMount{Tag: "storefs"})
	s.MD5Check("md5sum", "/mnt", manifest)
	s.CountEntries("find", "/mnt", entries)
	s.ExpectOutput("readlink", "readlink /mnt/link", "hello.txt\n")
	s.Umount("umount", "/mnt")
	h.Run(t, Options{QEMUArgs: VirtiofsQEMUArgs(sock, "storefs", 0), Timeout: 90 * time.Second}, s)
}

// startVirtiofsd shares dir on a new socket until the test ends and
// returns the socket's path once it exists.
func startVirtiofsd(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, virtiofsd, "--socket-path="+sock, "-o", "source="+dir, "-o", "cache=none", "--rlimit-nofile=0")
	cmd.WaitDelay = 5 * time.Second
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting virtiofsd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("virtiofsd log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("virtiofsd exited before creating its socket (%v):\n%s", err, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("virtiofsd made no socket in 10s:\n%s", log.String())
		}
	}
}

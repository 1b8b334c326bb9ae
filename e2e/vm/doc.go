// Package vm tests storefs with real Linux kernel clients (NFSv3, 9P2000.L,
// virtiofs, FUSE) in a QEMU guest. The host kernel has no NFS or 9P client,
// so each test boots Debian's own kernel under emulation (TCG), with a tiny
// busybox initrd, mounts the server under test and reports what it saw.
//
// # How it works
//
// The guest kernel is the package linux-image-amd64 depends on, fetched
// with apt-get download, unpacked with dpkg -x and indexed with depmod into
// a cache directory kept across runs (never installed into the host's
// /boot). A lock file in the cache lets concurrent test processes share it.
//
// Each run writes an uncompressed initrd of two concatenated cpio archives
// (the kernel unpacks both): the base (static busybox, the kernel modules in
// the load order modprobe --show-depends computes, and /init) and the
// test's Script (one shell file per check, a plan and the files the checks
// read). /init loads the modules, configures the network as qemu's user
// networking expects (10.0.2.15/24, gateway 10.0.2.2), runs the checks,
// prints one line per check
//
//	STOREFS-CHECK <name> PASS|FAIL|SKIP <seconds> [detail]
//
// preceded by the check's output as "STOREFS-OUT <name> <line>", then
// STOREFS-DONE, and powers off. qemu runs with -nographic -no-reboot and
// panic=-1, so a kernel panic ends it too; a hard timeout kills it. Run
// streams the console into the test log and turns each check into a
// subtest; a guest that panics, hangs or never reports fails the test with
// the end of its console.
//
// In the guest, the host's 127.0.0.1 is 10.0.2.2 (HostAddr): a server under
// test listens on 127.0.0.1 and sees the guest connect from 127.0.0.1 on an
// unprivileged port, so it must not demand a reserved source port.
//
// # Running
//
//	go test ./e2e/vm/...                 # skips what is missing
//	STOREFS_E2E=1 go test ./e2e/vm/...   # fails instead (CI)
//
// The host needs qemu-system-x86_64, a static busybox, kmod's modprobe and
// depmod, and apt-get and dpkg to fetch the kernel (the Debian packages are
// listed in .ci/packages-vm.txt). Without them tests skip, or fail under
// STOREFS_E2E=1 (see package e2etest). The first run downloads about 70 MB
// and unpacks about 400 MB; later runs reuse the cache.
//
// Environment:
//
//   - STOREFS_VM_CACHE: the cache directory (default
//     $XDG_CACHE_HOME/storefs-e2e, else /var/tmp/storefs-e2e).
//   - STOREFS_VM_KERNEL: a kernel release such as 6.1.0-56-amd64 to use
//     instead of the one linux-image-amd64 depends on. Without apt, the
//     newest kernel already in the cache is used.
//   - STOREFS_VM_KVM=1: use KVM instead of TCG. Off by default: a /dev/kvm
//     that cannot run a stock kernel makes the guest hang silently.
//
// # Adding a frontend's guest checks
//
// Start the server on 127.0.0.1, build a Script with the building blocks
// (a mount, then checks on it, then Umount) and Run it:
//
//	func TestNFSKernelClient(t *testing.T) {
//		h := vm.NeedHost(t)    // skips (or fails under STOREFS_E2E=1) first
//		port := startServer(t) // listening on 127.0.0.1
//		s := vm.NewScript()
//		s.MountNFS3("mount", vm.NFS3Mount{Port: port})
//		s.LsLa("ls", "/mnt/some/dir", wantListing)
//		s.MD5Check("md5sum", "/mnt", manifest) // vm.MD5Manifest(treeOnHost)
//		s.CountEntries("find", "/mnt", 1234)
//		s.Inodes("inodes", []string{"/mnt/a", "/mnt/b"})
//		s.WriteFails("read-only", "/mnt", "some-file")
//		s.Umount("umount", "/mnt")
//		res := h.Run(t, vm.Options{}, s) // or vm.Run(t, opts, s)
//		if c, ok := res.Check("inodes"); ok && c.Status == vm.Pass {
//			ino, err := c.Inodes() // judged on the Go side
//			...
//		}
//	}
//
// Mount9P and MountVirtiofs work the same way; a virtiofs guest also needs
// Options.QEMUArgs from VirtiofsQEMUArgs. Check runs any shell snippet
// (busybox applets, "sh -e"), Capture hands output to the Go side,
// ExpectOutput compares output with a diff, MustFail requires given errors.
// Mounts are Required: when one fails the rest SKIP instead of piling up
// errors. Each check has a guest-side timeout (Timeout, default 60s); keep
// Options.Timeout, the whole run, above their sum. Mount helpers add the
// kernel modules they need; Options.Features and Options.Modules add more.
// The 9P client shows qid.path+2 as the inode number (NinePInode).
// Boot is the same without *testing.T, for benchmarks and for tests that
// expect a failure.
//
// Under TCG on two cores a guest boots to /init in about 2 s (6-8 s of wall
// time with firmware and decompression) and bulk reads top out near
// 55-100 MiB/s: use the guest for correctness and relative metadata cost,
// not throughput.
package vm

package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Feature names a kernel facility the guest needs; each brings the modules
// it takes to use it. Networking (virtio-net) is always included.
type Feature string

// Features a guest script can need. The Mount* building blocks of Script
// add theirs automatically.
const (
	// Feature9P is the 9P2000.L client over TCP (and virtio).
	Feature9P Feature = "9p"
	// FeatureNFS3 is the NFSv3 client with NFS_ACL.
	FeatureNFS3 Feature = "nfs3"
	// FeatureFUSE is /dev/fuse.
	FeatureFUSE Feature = "fuse"
	// FeatureVirtiofs is the virtiofs client (virtio + FUSE).
	FeatureVirtiofs Feature = "virtiofs"
)

// Modules returns the top-level module names of f; their dependencies are
// resolved with modprobe --show-depends.
func (f Feature) Modules() []string {
	switch f {
	case Feature9P:
		// 9pnet_fd carries trans=tcp: without it the mount fails with
		// "Could not find request transport: tcp".
		return []string{"9p", "9pnet_fd", "9pnet_virtio"}
	case FeatureNFS3:
		return []string{"nfsv3", "nfs_acl"}
	case FeatureFUSE:
		return []string{"fuse"}
	case FeatureVirtiofs:
		return []string{"virtiofs"}
	}
	return nil
}

// baseModules are loaded in every guest: the network card.
func baseModules() []string { return []string{"virtio_pci", "virtio_net"} }

// ResolveModules returns the .ko files that load names and everything they
// depend on, in load order without repeats, as modprobe computes it from
// the kernel's modules.dep. Built-in modules are left out.
func ResolveModules(ctx context.Context, k *Kernel, names []string) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	for _, name := range names {
		// -C /dev/null: the host's modprobe.d (blacklists, options) is not
		// the guest's.
		out, err := run(ctx, "", "modprobe", "-C", "/dev/null", "-d", k.Root, "-S", k.Release, "--show-depends", name)
		if err != nil {
			return nil, fmt.Errorf("vm: resolving module %s: %w", name, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue // "builtin NAME" lines, repeats
			}
			seen[f[1]] = true
			files = append(files, f[1])
		}
	}
	return files, nil
}

// CheckStaticBusybox returns an error unless path is a statically linked
// executable: the initrd has no libc for a dynamic one.
func CheckStaticBusybox(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("vm: busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("vm: busybox %s is dynamically linked; install busybox-static", path)
		}
	}
	return nil
}

// WriteBaseInitrd writes the guest's base initramfs to w as an
// uncompressed cpio archive: busybox, the module files (loaded by /init in
// the order given) and /init itself. The per-test part (see Script) is a
// second archive appended to this one.
func WriteBaseInitrd(w io.Writer, busybox string, modules []string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	c := newCPIOWriter(w)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "mnt", "modules"} {
		c.dir(d, 0o755)
	}
	c.charDev("dev/console", 0o600, 5, 1)
	c.file("bin/busybox", 0o755, bb)
	c.file("init", 0o755, []byte(initScript))
	for i, m := range modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return fmt.Errorf("vm: initrd: %w", err)
		}
		c.file(fmt.Sprintf("modules/%03d-%s", i, filepath.Base(m)), 0o644, data)
	}
	return c.close()
}

// moduleNames returns the sorted, deduplicated top-level modules for the
// given features plus extra module names, base modules first.
func moduleNames(features []Feature, extra []string) []string {
	names := baseModules()
	set := map[string]bool{}
	var rest []string
	add := func(n string) {
		if !set[n] {
			set[n] = true
			rest = append(rest, n)
		}
	}
	for _, f := range features {
		for _, n := range f.Modules() {
			add(n)
		}
	}
	for _, n := range extra {
		add(n)
	}
	sort.Strings(rest)
	return append(names, rest...)
}

// initScript is the guest's /init, run by busybox sh. It prepares the
// system, loads /modules/*.ko in order, configures the network the way
// qemu's user networking expects, then runs the checks listed in
// /storefs/plan ("NAME TIMEOUT_SECONDS REQUIRED" per line) and reports
// each as
//
//	STOREFS-OUT NAME <line of the check's output>   (any number)
//	STOREFS-CHECK NAME PASS|FAIL|SKIP SECONDS [DETAIL]
//
// followed by STOREFS-DONE, and powers off. A check is
// /storefs/checks/NAME.sh run by "sh -e" under a timeout; it passes when it
// exits 0. After a REQUIRED check fails the rest are reported as SKIP.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
up() { read -r u rest < /proc/uptime; echo "$u"; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }'; }
echo "STOREFS-BOOT uptime=$(up) kernel=$(uname -r)"

skip=
t0=$(up); failed=
for m in /modules/*.ko; do
	[ -e "$m" ] || continue
	if ! insmod "$m" > /tmp/insmod.out 2>&1; then
		failed="$failed ${m#/modules/}"
		sed "s|^|STOREFS-OUT modules ${m#/modules/}: |" /tmp/insmod.out
	fi
done
if [ -z "$failed" ]; then
	echo "STOREFS-CHECK modules PASS $(since $t0) $(ls /modules | wc -l) modules"
else
	echo "STOREFS-CHECK modules FAIL $(since $t0) insmod failed:$failed"
	skip=modules
fi

t0=$(up)
if [ -z "$skip" ] && ip link set lo up && ip link set eth0 up &&
	ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; then
	ip -4 addr show eth0 | sed 's/^/STOREFS-OUT network /'
	echo "STOREFS-CHECK network PASS $(since $t0)"
elif [ -n "$skip" ]; then
	echo "STOREFS-CHECK network SKIP 0 $skip failed"
else
	ip link 2>&1 | sed 's/^/STOREFS-OUT network /'
	echo "STOREFS-CHECK network FAIL $(since $t0) cannot configure eth0"
	skip=network
fi

if [ -f /storefs/plan ]; then
	while read -r name secs req; do
		if [ -n "$skip" ]; then
			echo "STOREFS-CHECK $name SKIP 0 $skip failed"
			continue
		fi
		t0=$(up)
		timeout -s KILL "$secs" sh -e "/storefs/checks/$name.sh" < /dev/null > /tmp/out 2>&1
		rc=$?
		el=$(since $t0)
		sed "s/^/STOREFS-OUT $name /" /tmp/out
		if [ "$rc" = 0 ]; then
			echo "STOREFS-CHECK $name PASS $el"
			continue
		fi
		dmesg | awk -v t0="$t0" '{ s = $0; sub(/^\[ */, "", s); if (s + 0 >= t0) print }' |
			tail -n 20 | sed "s/^/STOREFS-OUT $name dmesg: /"
		if [ "$rc" = 137 ]; then
			echo "STOREFS-CHECK $name FAIL $el killed after the ${secs}s timeout"
		else
			echo "STOREFS-CHECK $name FAIL $el exit status $rc"
		fi
		[ "$req" = 1 ] && skip=$name
	done < /storefs/plan
fi
echo "STOREFS-DONE uptime=$(up)"
poweroff -f
`

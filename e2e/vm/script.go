package vm

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// HostAddr is the guest's address of the host's loopback interface: qemu's
// user networking forwards connections to 10.0.2.2 to 127.0.0.1, so a
// server under test listens on 127.0.0.1 and the guest mounts 10.0.2.2.
// Such guests arrive from 127.0.0.1 on unprivileged source ports.
const HostAddr = "10.0.2.2"

// DefaultCheckTimeout bounds one check in the guest unless the check says
// otherwise (see Timeout).
const DefaultCheckTimeout = 60 * time.Second

// Script is the guest side of one VM run: an ordered list of named checks,
// each a busybox shell snippet run in the guest, plus the files they read.
// Build it with the methods below, then pass it to Run or Boot.
//
// A check passes when its snippet exits 0; snippets run with "sh -e", so
// any failing command fails the check. Everything a check prints is
// reported back and shown on failure (and kept in CheckResult.Output).
// A mistake in building the script (a bad or repeated name) is reported by
// Run or Boot.
type Script struct {
	checks   []scriptCheck
	files    map[string][]byte
	features []Feature
	err      error
}

type scriptCheck struct {
	name     string
	body     string
	timeout  time.Duration
	required bool
}

// CheckOption changes how a check runs.
type CheckOption func(*scriptCheck)

// Timeout bounds the check in the guest; when it runs out the check's
// processes are killed and it fails. The default is DefaultCheckTimeout.
func Timeout(d time.Duration) CheckOption {
	return func(c *scriptCheck) { c.timeout = d }
}

// Required makes the checks after this one SKIP if it fails: a failed
// mount makes the checks on the mount meaningless. Mounts are required by
// default.
func Required(required bool) CheckOption {
	return func(c *scriptCheck) { c.required = required }
}

// NewScript returns an empty script; even an empty one boots, loads the
// modules and configures the network, reported as checks "modules" and
// "network".
func NewScript() *Script { return &Script{files: map[string][]byte{}} }

var checkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Need adds the kernel modules of features to the guest. The Mount*
// methods call it themselves.
func (s *Script) Need(features ...Feature) {
	s.features = append(s.features, features...)
}

// Check adds a check named name (letters, digits, '.', '_', '-') that runs
// the shell snippet body.
func (s *Script) Check(name, body string, opts ...CheckOption) {
	switch {
	case s.err != nil:
		return
	case !checkName.MatchString(name):
		s.err = fmt.Errorf("vm: check name %q: want letters, digits, '.', '_' or '-'", name)
		return
	case name == "modules" || name == "network":
		s.err = fmt.Errorf("vm: check name %q is reserved for the guest's own checks", name)
		return
	}
	for _, c := range s.checks {
		if c.name == name {
			s.err = fmt.Errorf("vm: check %q added twice", name)
			return
		}
	}
	c := scriptCheck{name: name, body: body, timeout: DefaultCheckTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.timeout < time.Second {
		c.timeout = time.Second
	}
	s.checks = append(s.checks, c)
}

// AddFile puts data into the guest at /storefs/files/NAME and returns that
// path. name may contain slashes, not "..".
func (s *Script) AddFile(name string, data []byte) string {
	clean := filepath.ToSlash(filepath.Clean(name))
	if s.err == nil && (clean != name || strings.HasPrefix(clean, "../") || clean == ".." || strings.HasPrefix(clean, "/")) {
		s.err = fmt.Errorf("vm: file name %q must be a clean relative path", name)
	}
	s.files[clean] = data
	return "/storefs/files/" + clean
}

// NFS3Mount says how to mount an NFSv3 export in the guest.
type NFS3Mount struct {
	// Port is the NFS port on the host's 127.0.0.1 (required).
	Port int
	// MountPort is the MOUNT protocol's port; 0 means Port.
	MountPort int
	// Export is the exported path; "" means "/".
	Export string
	// Dir is the guest mountpoint; "" means /mnt.
	Dir string
	// Options are extra mount options, e.g. "rsize=65536".
	Options []string
}

// MountNFS3 adds a required check that mounts an NFSv3 export over TCP
// without rpcbind or locking, as the Linux 6.1 client does with
//
//	mount -t nfs -o vers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock,addr=10.0.2.2 10.0.2.2:/ /mnt
func (s *Script) MountNFS3(name string, m NFS3Mount, opts ...CheckOption) {
	s.Need(FeatureNFS3)
	if m.MountPort == 0 {
		m.MountPort = m.Port
	}
	if m.Export == "" {
		m.Export = "/"
	}
	o := append([]string{"vers=3", "proto=tcp", "port=" + strconv.Itoa(m.Port),
		"mountport=" + strconv.Itoa(m.MountPort), "mountproto=tcp", "nolock", "addr=" + HostAddr}, m.Options...)
	s.mount(name, "nfs", strings.Join(o, ","), HostAddr+":"+m.Export, m.Dir, opts)
}

// NinePMount says how to mount a 9P2000.L export over TCP in the guest.
type NinePMount struct {
	// Port is the server's port on the host's 127.0.0.1 (required).
	Port int
	// Aname is the attach name; "" leaves it out (the empty aname).
	Aname string
	// Msize is the maximum message size to ask for; 0 leaves it to the
	// kernel (it asks for 512 KiB).
	Msize int
	// Dir is the guest mountpoint; "" means /mnt.
	Dir string
	// Options are extra mount options, e.g. "cache=loose".
	Options []string
}

// Mount9P adds a required check that mounts a 9P2000.L export over TCP:
//
//	mount -t 9p -o trans=tcp,port=P,version=9p2000.L,aname=A,msize=M 10.0.2.2 /mnt
//
// The kernel attaches as uname "nobody" and, on first access by root, as
// n_uname 0.
func (s *Script) Mount9P(name string, m NinePMount, opts ...CheckOption) {
	s.Need(Feature9P)
	o := []string{"trans=tcp", "port=" + strconv.Itoa(m.Port), "version=9p2000.L"}
	if m.Aname != "" {
		o = append(o, "aname="+m.Aname)
	}
	if m.Msize != 0 {
		o = append(o, "msize="+strconv.Itoa(m.Msize))
	}
	o = append(o, m.Options...)
	s.mount(name, "9p", strings.Join(o, ","), HostAddr, m.Dir, opts)
}

// NinePInode returns the inode number the Linux 9P client shows for a file
// whose qid.path is qidPath: v9fs_qid2ino adds 2 (on 64-bit hosts), so
// "stat -c %i" in the guest never equals qid.path itself.
func NinePInode(qidPath uint64) uint64 { return qidPath + 2 }

// VirtiofsMount says how to mount a virtiofs share in the guest. The VM
// needs the device too: see VirtiofsQEMUArgs.
type VirtiofsMount struct {
	// Tag is the share's tag (the vhost-user-fs-pci device's tag=).
	Tag string
	// Dir is the guest mountpoint; "" means /mnt.
	Dir string
	// Options are extra mount options.
	Options []string
}

// MountVirtiofs adds a required check that mounts a virtiofs share:
//
//	mount -t virtiofs TAG /mnt
func (s *Script) MountVirtiofs(name string, m VirtiofsMount, opts ...CheckOption) {
	s.Need(FeatureVirtiofs)
	s.mount(name, "virtiofs", strings.Join(m.Options, ","), m.Tag, m.Dir, opts)
}

func (s *Script) mount(name, fstype, options, source, dir string, opts []CheckOption) {
	if dir == "" {
		dir = "/mnt"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mkdir -p %s\n", quote(dir))
	if options != "" {
		fmt.Fprintf(&b, "echo mount -t %s -o %s %s %s\n", fstype, quote(options), quote(source), quote(dir))
		fmt.Fprintf(&b, "mount -t %s -o %s %s %s\n", fstype, quote(options), quote(source), quote(dir))
	} else {
		fmt.Fprintf(&b, "echo mount -t %s %s %s\n", fstype, quote(source), quote(dir))
		fmt.Fprintf(&b, "mount -t %s %s %s\n", fstype, quote(source), quote(dir))
	}
	fmt.Fprintf(&b, "grep ' %s ' /proc/mounts\n", dir)
	s.Check(name, b.String(), append([]CheckOption{Required(true)}, opts...)...)
}

// Umount adds a check that unmounts dir and verifies it is gone from
// /proc/mounts.
func (s *Script) Umount(name, dir string, opts ...CheckOption) {
	s.Check(name, fmt.Sprintf("umount %s\nif grep ' %s ' /proc/mounts; then echo still mounted; exit 1; fi\n",
		quote(dir), dir), opts...)
}

// ExpectOutput adds a check that runs cmd and compares its standard output
// with want; a difference fails the check and is shown as a unified diff
// (- want, + got). cmd must also exit 0.
func (s *Script) ExpectOutput(name, cmd, want string, opts ...CheckOption) {
	wantPath := s.AddFile("expect/"+name, []byte(want))
	got := "/tmp/got." + name
	s.Check(name, fmt.Sprintf("( %s ) > %s\ndiff -u %s %s\n", cmd, got, wantPath, got), opts...)
}

// LsLa adds a check that "ls -la DIR" in the guest prints exactly want.
// The guest has no /etc/passwd, so owners are numeric, and its time zone
// is UTC: ListLong renders the expected text from a directory on the host.
func (s *Script) LsLa(name, dir, want string, opts ...CheckOption) {
	s.ExpectOutput(name, "ls -la "+quote(dir), want, opts...)
}

// MD5Check adds a check that runs "md5sum -c" in dir against manifest, in
// md5sum's format ("HEX  RELATIVE/PATH" per line; see MD5Manifest).
func (s *Script) MD5Check(name, dir, manifest string, opts ...CheckOption) {
	p := s.AddFile("md5/"+name, []byte(manifest))
	s.Check(name, fmt.Sprintf("cd %s\nmd5sum -c %s\n", quote(dir), p), opts...)
}

// CountEntries adds a check that "find DIR | wc -l" (DIR itself included)
// is want.
func (s *Script) CountEntries(name, dir string, want int, opts ...CheckOption) {
	s.Check(name, fmt.Sprintf("find %s > /tmp/find.%s\nn=$(wc -l < /tmp/find.%s)\necho \"$n entries, want %d\"\n[ \"$n\" -eq %d ]\n",
		quote(dir), name, name, want, want), opts...)
}

// Capture adds a check that runs cmd and passes if it exits 0; its output
// is in the result for the Go side to judge (CheckResult.Output).
func (s *Script) Capture(name, cmd string, opts ...CheckOption) {
	s.Check(name, cmd+"\n", opts...)
}

// Inodes adds a check that prints "INODE PATH" for each path with
// stat -c '%i %n'; read them with CheckResult.Inodes.
func (s *Script) Inodes(name string, paths []string, opts ...CheckOption) {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = quote(p)
	}
	s.Check(name, "stat -c '%i %n' "+strings.Join(q, " ")+"\n", opts...)
}

// ReadOnlyError is what busybox prints for EROFS.
const ReadOnlyError = "Read-only file system"

// MustFail adds a check that runs each command and requires every one to
// fail with an error message containing want.
func (s *Script) MustFail(name, want string, cmds []string, opts ...CheckOption) {
	var b strings.Builder
	b.WriteString("bad=0\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "if out=$( %s 2>&1 ); then echo %s; bad=1\n", c, quote("FAIL "+c+": succeeded"))
		fmt.Fprintf(&b, "else case \"$out\" in *%s*) echo %s\"$out\";; *) echo %s\"$out\"; bad=1;; esac; fi\n",
			quote(want), quote("ok   "+c+": "), quote("FAIL "+c+": want "+want+", got: "))
	}
	b.WriteString("exit $bad\n")
	s.Check(name, b.String(), opts...)
}

// WriteFails adds a check that writes into dir fail with "Read-only file
// system": creating a file (by shell redirection and by touch), a
// directory and a symlink, and, if existing names a file in dir, removing,
// renaming and chmod-ing it.
func (s *Script) WriteFails(name, dir, existing string, opts ...CheckOption) {
	d := strings.TrimSuffix(dir, "/")
	cmds := []string{
		"sh -c " + quote(": > "+quote(d+"/.storefs-new-file")),
		"touch " + quote(d+"/.storefs-touched"),
		"mkdir " + quote(d+"/.storefs-new-dir"),
		"ln -s target " + quote(d+"/.storefs-new-link"),
	}
	if existing != "" {
		e := d + "/" + existing
		cmds = append(cmds,
			"rm -f "+quote(e),
			"mv "+quote(e)+" "+quote(d+"/.storefs-renamed"),
			"chmod 0600 "+quote(e),
		)
	}
	s.MustFail(name, ReadOnlyError, cmds, opts...)
}

// archive writes the script's part of the initrd: /storefs/plan, one
// /storefs/checks/NAME.sh per check and the added files.
func (s *Script) archive(w io.Writer) error {
	if s.err != nil {
		return s.err
	}
	c := newCPIOWriter(w)
	c.dir("storefs", 0o755)
	c.dir("storefs/checks", 0o755)
	c.dir("storefs/files", 0o755)
	var plan strings.Builder
	for _, ch := range s.checks {
		req := 0
		if ch.required {
			req = 1
		}
		fmt.Fprintf(&plan, "%s %d %d\n", ch.name, int((ch.timeout+time.Second-1)/time.Second), req)
		c.file("storefs/checks/"+ch.name+".sh", 0o644, []byte(ch.body))
	}
	c.file("storefs/plan", 0o644, []byte(plan.String()))
	dirs := map[string]bool{}
	for name := range s.files {
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range sortedKeys(dirs) { // parents sort before children
		c.dir("storefs/files/"+d, 0o755)
	}
	for _, name := range sortedKeys(s.files) {
		c.file("storefs/files/"+name, 0o644, s.files[name])
	}
	return c.close()
}

// names returns the names of all checks the guest will report, in order.
func (s *Script) names() []string {
	n := []string{"modules", "network"}
	for _, c := range s.checks {
		n = append(n, c.name)
	}
	return n
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// quote quotes s for the shell.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=,:+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// MD5Manifest returns an md5sum manifest ("HEX  PATH" lines, paths relative
// to root) of the regular files under root, for MD5Check. Symlinks are not
// followed.
func MD5Manifest(root string) (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := md5.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("vm: md5 manifest of %s: %w", root, err)
	}
	return b.String(), nil
}

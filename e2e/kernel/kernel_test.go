package kernel_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	pathpkg "path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/vm"
	"github.com/storefs/storefs/protocols/nfs"
	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/vfs"
)

// Error messages of busybox in the guest.
const (
	errROFS   = vm.ReadOnlyError            // EROFS
	errAccess = "Permission denied"         // EACCES
	errPerm   = "Operation not permitted"   // EPERM
	errNoEnt  = "No such file or directory" // ENOENT
)

// client is one kernel client under test.
type client struct {
	name string // also the guest's mountpoint /mnt/NAME
	// serve starts the protocol's server for fsys on 127.0.0.1 until the
	// test ends and returns its port.
	serve func(t *testing.T, fsys *vfs.FS) int
	// mount adds the mount check of the server on port at dir.
	mount func(s *vm.Script, check string, port int, dir string)
	// ino is the inode number the guest shows for a vfs inode number.
	ino func(vfsIno uint64) uint64
	// openWriteErrors are the messages an open for writing of an existing
	// file may fail with.
	openWriteErrors []string
}

// TestKernelNFS mounts the store with the Linux 6.1 NFSv3 client.
func TestKernelNFS(t *testing.T) {
	t.Parallel()
	var taps []*rpcTap // of the list_root server, then of the other
	c := client{
		name: "nfs",
		serve: func(t *testing.T, fsys *vfs.FS) int {
			tap := &rpcTap{Listener: listen(t)}
			taps = append(taps, tap)
			var l net.Listener = tap
			srv, err := nfs.New(fsys, nfs.Options{Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(l) }()
			t.Cleanup(func() {
				if err := srv.Close(); err != nil {
					t.Errorf("closing the NFS server: %v", err)
				}
				if err := <-done; !errors.Is(err, nfs.ErrServerClosed) {
					t.Errorf("NFS Serve returned %v, want ErrServerClosed", err)
				}
			})
			return l.Addr().(*net.TCPAddr).Port
		},
		mount: func(s *vm.Script, check string, port int, dir string) {
			s.MountNFS3(check, vm.NFS3Mount{Port: port, Dir: dir})
		},
		ino: func(i uint64) uint64 { return i },
		// The client asks ACCESS before it opens an existing file for
		// writing; the server never grants MODIFY or EXTEND, so the client
		// says EACCES without sending a write (peers.md).
		openWriteErrors: []string{errROFS, errAccess},
	}
	if runKernelClient(t, c) == nil {
		return
	}
	checkNFSCalls(t, taps[0].Calls())
	// Listing the root of the list_root: false server is refused with
	// NFS3ERR_PERM on the wire too.
	perm := 0
	for _, c := range taps[1].Calls() {
		if c.Prog == progNFS && (c.Proc == nfsProcReaddirplus || c.Proc == nfsProcReaddir) &&
			len(c.Results) >= 4 && binary.BigEndian.Uint32(c.Results) == nfs3ErrPerm {
			perm++
		}
	}
	if perm == 0 {
		t.Errorf("the list_root: false server never answered a READDIRPLUS with NFS3ERR_PERM")
	}
}

// TestKernel9P mounts the store with the Linux 6.1 v9fs client over TCP.
func TestKernel9P(t *testing.T) {
	t.Parallel()
	var tap *ninepTap
	c := client{
		name: "9p",
		serve: func(t *testing.T, fsys *vfs.FS) int {
			var l net.Listener = listen(t)
			if tap == nil { // the list_root server is started first
				tap = &ninepTap{Listener: l}
				l = tap
			}
			srv := ninep.New(fsys, ninep.Options{Logger: quietLog()})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, l) }()
			t.Cleanup(func() {
				cancel()
				if err := srv.Close(); err != nil {
					t.Errorf("closing the 9P server: %v", err)
				}
				if err := <-done; err != nil && !errors.Is(err, ninep.ErrServerClosed) {
					t.Errorf("9P Serve returned %v", err)
				}
			})
			return l.Addr().(*net.TCPAddr).Port
		},
		mount: func(s *vm.Script, check string, port int, dir string) {
			s.Mount9P(check, vm.NinePMount{Port: port, Dir: dir})
		},
		// v9fs shows qid.path+2 (v9fs_qid2ino), and qid.path is the vfs
		// inode number: docs/9p.md.
		ino:             vm.NinePInode,
		openWriteErrors: []string{errROFS},
	}
	res := runKernelClient(t, c)
	if res == nil {
		return
	}
	// The guest shows qid.path+2; qid.path itself, on the wire, is the
	// vfs inode number (filesystem.md, "same inode everywhere").
	for _, rel := range inodePaths {
		p := "/"
		if rel != "/" {
			p = pathpkg.Join("/", res.fx.storePath(rel))
		}
		q, ok := tap.QIDPath(p)
		if want := res.vfsIno[rel]; !ok || q != want {
			t.Errorf("9p: qid.path of %s = %d (walked: %v), want the vfs inode %d", p, q, ok, want)
		}
	}
}

// listen returns a TCP listener on a free port of 127.0.0.1; the server
// that serves it closes it.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.1: %v", err)
	}
	return l
}

// run is what runKernelClient leaves for protocol-specific checks.
type run struct {
	fx     *fixture
	vfsIno map[string]uint64 // of inodePaths
}

// runKernelClient serves the fixture with c's protocol twice (list_root on
// and off), boots one guest that mounts both and checks them, and judges
// the inode numbers the guest saw against vfs and a host FUSE mount. It
// returns nil if the guest did not get through its checks.
func runKernelClient(t *testing.T, c client) *run {
	h := vm.NeedHost(t)
	ctx := t.Context()
	start := time.Now()
	fx := newFixture(t)
	wantIno, err := fx.vfsInodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mnt := fuseMount(t, fx); mnt != "" {
		fuseIno, err := fx.fuseInodes(mnt)
		if err != nil {
			t.Fatal(err)
		}
		for _, rel := range inodePaths {
			if fuseIno[rel] != wantIno[rel] {
				t.Errorf("%s: inode %d on the host FUSE mount, %d in vfs", rel, fuseIno[rel], wantIno[rel])
			}
		}
		// The FUSE mount, listed by the same busybox, is a second
		// rendering of the expected listing.
		for _, rel := range []string{".", "bin"} {
			want, err := fx.expectLsLa(ctx, rel)
			if err != nil {
				t.Fatal(err)
			}
			got, err := vm.ListLong(ctx, h.Busybox, mnt+"/"+fx.storePath(rel))
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("ls -la %s on the host FUSE mount:\n%s\nrendered from vfs:\n%s", rel, got, want)
			}
		}
	}
	port := c.serve(t, fx.fsys)
	portNoList := c.serve(t, fx.noList)

	s, guestPaths, err := guestScript(ctx, fx, c, port, portNoList, buildProbe(t))
	if err != nil {
		t.Fatal(err)
	}
	setup := time.Since(start)
	res := h.Run(t, vm.Options{Timeout: 150 * time.Second}, s)
	t.Logf("TIMING %s: host setup (tree, import, servers, FUSE) %v; guest boot+mount+checks %v of qemu wall time "+
		"(kernel at /init after %v, script done at %v of guest uptime)", c.name, setup.Round(time.Millisecond),
		res.Wall.Round(time.Millisecond), res.InitAt, res.DoneAt)

	r, ok := res.Check("inodes")
	if !res.Done || !ok || r.Status != vm.Pass {
		return nil
	}
	got, err := r.Inodes()
	if err != nil {
		t.Fatal(err)
	}
	for i, rel := range inodePaths {
		g, ok := got[guestPaths[i]]
		if want := c.ino(wantIno[rel]); !ok || g != want {
			t.Errorf("%s: the guest's stat -c %%i of %s = %d, want %d (vfs inode %d)", c.name, guestPaths[i],
				g, want, wantIno[rel])
		}
	}
	return &run{fx: fx, vfsIno: wantIno}
}

// guestScript builds the guest's checks for client c: the list_root
// server on port is mounted at /mnt/NAME, the other at /mnt/NAME-nolist.
// It returns the guest paths of inodePaths too.
func guestScript(ctx context.Context, fx *fixture, c client, port, portNoList int, probe []byte) (*vm.Script, []string, error) {
	mnt := "/mnt/" + c.name
	root := mnt + "/" + fx.base
	manifest, err := vm.MD5Manifest(fx.src)
	if err != nil {
		return nil, nil, err
	}
	find, entries, err := fx.expectFind()
	if err != nil {
		return nil, nil, err
	}
	statAll, err := fx.expectStatAll(ctx)
	if err != nil {
		return nil, nil, err
	}
	s := vm.NewScript()
	lsprobe := s.AddFile("bin/lsprobe", probe)
	s.Check("lsprobe", "chmod 0755 "+lsprobe, vm.Required(true))
	c.mount(s, "mount", port, mnt)
	s.ExpectOutput("ls-root", lsprobe+" "+mnt, fx.base+"\n")
	for _, rel := range []string{".", "bin", "lib/a", "share/doc"} {
		want, err := fx.expectLsLa(ctx, rel)
		if err != nil {
			return nil, nil, err
		}
		s.LsLa("ls-la-"+strings.NewReplacer("/", "-", ".", "root").Replace(rel), fx.guestPath(mnt, rel), want)
	}
	s.ExpectOutput("stat-all", fmt.Sprintf("cd %s && find . -exec stat -c '%s' {} + | sort", quote(root), statFormat), statAll)
	s.ExpectOutput("find", fmt.Sprintf("cd %s && find . | sort", quote(root)), find)
	s.CountEntries("find-count", root, entries)
	s.MD5Check("md5sum", root, manifest)

	var readlink, wantTargets strings.Builder
	for _, link := range []string{"bin/rel-link", "bin/up-link", "bin/abs-link", "dangling", "link-to-dir"} {
		fmt.Fprintf(&readlink, "readlink %s; ", quote(root+"/"+link))
		fmt.Fprintf(&wantTargets, "%s\n", symlinks[link])
	}
	s.ExpectOutput("readlink", readlink.String(), wantTargets.String())
	libA, err := fx.node(ctx, "lib/a")
	if err != nil {
		return nil, nil, err
	}
	s.ExpectOutput("through-symlinks",
		fmt.Sprintf("cd %s && cat bin/rel-link bin/up-link link-to-dir/nested/deep/leaf.txt && ls link-to-dir/ && "+
			"stat -L -c '%%s %%a %%F' bin/rel-link link-to-dir", quote(root)),
		fmt.Sprintf("#!/bin/sh\necho hello\nread me\nleaf\nempty\nlibfoo.so\nnested\n21 555 regular file\n%d 555 directory\n",
			fx.fsys.Attr(libA).Size))
	s.MustFail("dangling", errNoEnt, []string{
		"cat " + quote(root+"/dangling"),
		"stat -L " + quote(root+"/dangling"),
		"cat " + quote(root+"/bin/abs-link"),
		"cat " + quote(root+"/no-such-name"),
		"ls " + quote(mnt+"/"+strings.Replace(fx.base, "-", "-x", 1)), // right hash, wrong name
	})

	guestPaths := make([]string, len(inodePaths))
	for i, rel := range inodePaths {
		guestPaths[i] = fx.guestPath(mnt, rel)
	}
	s.Inodes("inodes", guestPaths)

	s.WriteFails("read-only-root", mnt, "")
	s.MustFail("read-only-root-entry", errROFS, []string{
		"rmdir " + quote(root),
		"mv " + quote(root) + " " + quote(mnt+"/renamed"),
		"chmod 0700 " + quote(root),
	})
	s.WriteFails("read-only-dir", root+"/bin", "hello")
	existing := root + "/share/doc/README"
	mustFailAny(s, "write-existing", c.openWriteErrors, []string{
		"sh -c " + quote("echo x >> "+quote(existing)),
		"sh -c " + quote("echo x > "+quote(existing)),
		"truncate -s 0 " + quote(existing),
		"truncate -s 0 " + quote(root+"/"+bigFile),
	})
	s.MD5Check("md5sum-after-writes", root, manifest)
	s.Umount("umount", mnt)

	nolist := mnt + "-nolist"
	c.mount(s, "mount-nolist", portNoList, nolist)
	// Busybox ls would print nothing and exit 0: it ignores a failed
	// getdents.
	s.MustFail("ls-root-nolist", errPerm, []string{lsprobe + " " + nolist})
	s.ExpectOutput("ls-path-nolist", lsprobe+" "+quote(nolist+"/"+fx.base), topNames(fx))
	s.ExpectOutput("cat-nolist", "cat "+quote(nolist+"/"+fx.base+"/share/doc/README"), "read me\n")
	s.Umount("umount-nolist", nolist)
	return s, guestPaths, nil
}

// topNames lists the imported root's entries from the source tree, one
// per line in byte order, as lsprobe prints them.
func topNames(fx *fixture) string {
	var b strings.Builder
	paths, _ := fx.relPaths()
	for _, p := range paths {
		if p != "." && !strings.Contains(p, "/") {
			b.WriteString(p + "\n")
		}
	}
	return b.String()
}

// buildProbe builds testdata/lsprobe as a static binary for the guest.
func buildProbe(t *testing.T) []byte {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "lsprobe")
	cmd := exec.CommandContext(t.Context(), goCmd, "build", "-trimpath", "-o", out, "./testdata/lsprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the guest's lsprobe: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustFailAny adds a check that runs each command and requires every one
// to fail with a message containing one of wants.
func mustFailAny(s *vm.Script, name string, wants, cmds []string) {
	var pat []string
	for _, w := range wants {
		pat = append(pat, "*"+quote(w)+"*")
	}
	var b strings.Builder
	b.WriteString("bad=0\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "if out=$( %s 2>&1 ); then echo %s; bad=1\n", c, quote("FAIL "+c+": succeeded"))
		fmt.Fprintf(&b, "else case \"$out\" in %s) echo %s\"$out\";; *) echo %s\"$out\"; bad=1;; esac; fi\n",
			strings.Join(pat, "|"), quote("ok   "+c+": "), quote("FAIL "+c+": want "+strings.Join(wants, " or ")+", got: "))
	}
	b.WriteString("exit $bad\n")
	s.Check(name, b.String())
}

// quote quotes s for the guest's shell.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// checkNFSCalls checks, from the RPC calls the guest's kernel sent the
// list_root server and the replies it got, what peers.md says of the
// Linux client and what the server must answer: NFS_ACL on the NFS port
// gets PROG_UNAVAIL; READDIRPLUS and ACCESS are used, and ACCESS never
// grants MODIFY, EXTEND or DELETE; every write procedure reaches the
// server and gets NFS3ERR_ROFS; every call is answered.
func checkNFSCalls(t *testing.T, calls []rpcCall) {
	t.Helper()
	count := map[[2]uint32]int{}
	for _, c := range calls {
		count[[2]uint32{c.Prog, c.Proc}]++
		switch {
		case !c.Replied:
			t.Errorf("RPC call prog %d vers %d proc %d got no reply", c.Prog, c.Vers, c.Proc)
		case c.Prog == progNFSACL:
			if !c.Accepted || c.AcceptStat != acceptProgUnavail {
				t.Errorf("NFS_ACL proc %d: accepted %v accept_stat %d, want PROG_UNAVAIL (%d)", c.Proc, c.Accepted,
					c.AcceptStat, acceptProgUnavail)
			}
		case c.Prog == progNFS && (!c.Accepted || c.AcceptStat != 0):
			t.Errorf("NFS proc %d: accepted %v accept_stat %d, want SUCCESS", c.Proc, c.Accepted, c.AcceptStat)
		case c.Prog == progNFS && c.Proc == nfsProcAccess:
			if len(c.Results) < 8 {
				t.Errorf("ACCESS reply of %d bytes", len(c.Results))
				break
			}
			off := 8 // status, attributes_follow
			if binary.BigEndian.Uint32(c.Results[4:]) == 1 {
				off += 84 // fattr3
			}
			if status := binary.BigEndian.Uint32(c.Results); status != 0 || len(c.Results) < off+4 {
				t.Errorf("ACCESS: status %d (%d bytes)", status, len(c.Results))
				break
			}
			if a := binary.BigEndian.Uint32(c.Results[off:]); a&(access3Modify|access3Extend|access3Delete) != 0 {
				t.Errorf("ACCESS granted %#x, which includes a write right", a)
			}
		case c.Prog == progNFS:
			switch c.Proc {
			case nfsProcSetattr, nfsProcCreate, nfsProcMkdir, nfsProcSymlink, nfsProcRemove, nfsProcRename:
				if len(c.Results) < 4 || binary.BigEndian.Uint32(c.Results) != nfs3ErrROFS {
					t.Errorf("NFS write proc %d: results %x, want status NFS3ERR_ROFS", c.Proc, c.Results[:min(4, len(c.Results))])
				}
			}
		}
	}
	t.Logf("RPC calls of the kernel client (prog, proc → count): %v", count)
	for _, want := range []struct {
		prog, proc uint32
		what       string
	}{
		{progNFSACL, 0, "NFS_ACL NULL at mount, on the NFS port"},
		{progMount, 1, "MOUNT MNT"},
		{progNFS, nfsProcReaddirplus, "READDIRPLUS"},
		{progNFS, nfsProcAccess, "ACCESS"},
		{progNFS, nfsProcCreate, "CREATE"},
		{progNFS, nfsProcMkdir, "MKDIR"},
		{progNFS, nfsProcSymlink, "SYMLINK"},
		{progNFS, nfsProcRemove, "REMOVE"},
		{progNFS, nfsProcRename, "RENAME"},
		{progNFS, nfsProcSetattr, "SETATTR"},
	} {
		if count[[2]uint32{want.prog, want.proc}] == 0 {
			t.Errorf("the kernel client never sent %s (prog %d proc %d)", want.what, want.prog, want.proc)
		}
	}
	if n := count[[2]uint32{progNFS, nfsProcReaddir}]; n != 0 {
		t.Logf("the kernel client also sent %d plain READDIR calls", n)
	}
}

package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	name       string
	mode       uint32
	rmaj, rmin uint32
	data       string
}

// readCPIO parses concatenated newc archives, as the kernel does.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	for len(b) > 0 {
		if len(b) < 110 || string(b[:6]) != "070701" {
			t.Fatalf("bad cpio header at %q", b[:min(len(b), 16)])
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), field(6), field(9), field(10), field(11)
		off := 110 + int(nsize)
		name := string(b[110 : off-1])
		off += pad4(off)
		data := string(b[off : off+int(size)])
		off += int(size)
		off += pad4(off)
		b = b[off:]
		if name == "TRAILER!!!" {
			continue
		}
		out = append(out, cpioEntry{name, mode, rmaj, rmin, data})
	}
	return out
}

func TestCPIO(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.dir("/bin", 0o755)
	c.file("bin/x", 0o755, []byte("abcde"))
	c.charDev("dev/console", 0o600, 5, 1)
	c.file("empty", 0o644, nil)
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	got := readCPIO(t, append(buf.Bytes(), buf.Bytes()...))
	want := []cpioEntry{
		{"bin", modeDir | 0o755, 0, 0, ""},
		{"bin/x", modeFile | 0o755, 0, 0, "abcde"},
		{"dev/console", modeChar | 0o600, 5, 1, ""},
		{"empty", modeFile | 0o644, 0, 0, ""},
	}
	want = append(want, want...)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestScriptArchive(t *testing.T) {
	s := NewScript()
	s.Mount9P("mount", NinePMount{Port: 5640, Aname: "/srv/x y", Msize: 65536})
	s.Check("quick", "true", Timeout(1500*time.Millisecond), Required(true))
	s.LsLa("ls", "/mnt/a dir", "total 0\n")
	var buf bytes.Buffer
	if err := s.archive(&buf); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range readCPIO(t, buf.Bytes()) {
		files[e.name] = e.data
	}
	if got, want := files["storefs/plan"], "mount 60 1\nquick 2 1\nls 60 0\n"; got != want {
		t.Errorf("plan = %q, want %q", got, want)
	}
	if got := files["storefs/checks/mount.sh"]; !strings.Contains(got,
		"mount -t 9p -o 'trans=tcp,port=5640,version=9p2000.L,aname=/srv/x y,msize=65536' 10.0.2.2 /mnt\n") {
		t.Errorf("mount.sh = %q", got)
	}
	if got := files["storefs/files/expect/ls"]; got != "total 0\n" {
		t.Errorf("expected ls output file = %q", got)
	}
	if _, ok := files["storefs/files/expect"]; !ok {
		t.Errorf("no directory entry for storefs/files/expect: %v", files)
	}
	if !reflect.DeepEqual(s.features, []Feature{Feature9P}) {
		t.Errorf("features = %v, want [9p]", s.features)
	}
}

func TestMountNFS3Command(t *testing.T) {
	s := NewScript()
	s.MountNFS3("nfs", NFS3Mount{Port: 2049})
	var buf bytes.Buffer
	if err := s.archive(&buf); err != nil {
		t.Fatal(err)
	}
	for _, e := range readCPIO(t, buf.Bytes()) {
		if e.name == "storefs/checks/nfs.sh" && !strings.Contains(e.data,
			"\nmount -t nfs -o vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,addr=10.0.2.2 10.0.2.2:/ /mnt\n") {
			t.Errorf("nfs.sh = %q", e.data)
		}
	}
	if !reflect.DeepEqual(s.features, []Feature{FeatureNFS3}) {
		t.Errorf("features = %v, want [nfs3]", s.features)
	}
}

func TestLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v, want a deadline error", err)
	}
	unlock()
	unlock2, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestScriptErrors(t *testing.T) {
	for name, build := range map[string]func(*Script){
		"bad name":  func(s *Script) { s.Check("a b", "true") },
		"slash":     func(s *Script) { s.Check("a/b", "true") },
		"reserved":  func(s *Script) { s.Check("network", "true") },
		"duplicate": func(s *Script) { s.Check("a", "true"); s.Check("a", "true") },
		"file":      func(s *Script) { s.AddFile("../x", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			s := NewScript()
			build(s)
			if err := s.archive(&bytes.Buffer{}); err == nil {
				t.Error("archive succeeded, want an error")
			}
		})
	}
}

func TestParseConsole(t *testing.T) {
	console := "\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n" +
		"STOREFS-BOOT uptime=1.50 kernel=6.1.0-56-amd64\r\n" +
		"STOREFS-CHECK modules PASS 0.30 8 modules\r\n" +
		"STOREFS-OUT ino 12 /mnt/a\r\n" +
		"STOREFS-OUT ino 13 /mnt/b c\r\n" +
		"[    2.1] some kernel message\r\n" +
		"STOREFS-CHECK ino PASS 0.05\r\n" +
		"STOREFS-OUT bad \r\n" +
		"STOREFS-CHECK bad FAIL 1.25 exit status 2\r\n" +
		"STOREFS-CHECK weird MAYBE 0\r\n" +
		"STOREFS-DONE uptime=3"
	res := &Result{}
	var lines []string
	st := readConsole(strings.NewReader(console), res, func(l string) { lines = append(lines, l) })
	if !res.Done || res.InitAt != 1500*time.Millisecond || res.DoneAt != 3*time.Second {
		t.Errorf("Done=%v InitAt=%v DoneAt=%v", res.Done, res.InitAt, res.DoneAt)
	}
	if lines[0] != "SeaBIOS" || len(st.tail) != len(lines) || lines[len(lines)-1] != "STOREFS-DONE uptime=3" {
		t.Errorf("console lines %q", lines)
	}
	want := []CheckResult{
		{Name: "modules", Status: Pass, Elapsed: 300 * time.Millisecond, Detail: "8 modules"},
		{Name: "ino", Status: Pass, Elapsed: 50 * time.Millisecond, Output: []string{"12 /mnt/a", "13 /mnt/b c"}},
		{Name: "bad", Status: Fail, Elapsed: 1250 * time.Millisecond, Detail: "exit status 2", Output: []string{""}},
		{Name: "weird", Status: Fail, Detail: `unknown status "MAYBE" `},
	}
	if !reflect.DeepEqual(res.Checks, want) {
		t.Errorf("checks:\n got %+v\nwant %+v", res.Checks, want)
	}
	inodes, err := res.Checks[1].Inodes()
	if err != nil || !reflect.DeepEqual(inodes, map[string]uint64{"/mnt/a": 12, "/mnt/b c": 13}) {
		t.Errorf("Inodes() = %v, %v", inodes, err)
	}
}

func TestParseConsolePanicAndLongLine(t *testing.T) {
	long := strings.Repeat("x", 3*maxLine)
	console := long + "\n[    1.0] Kernel panic - not syncing: Attempted to kill init!\n"
	res := &Result{}
	st := readConsole(strings.NewReader(console), res, nil)
	if st.panic != "Kernel panic - not syncing: Attempted to kill init!" {
		t.Errorf("panic = %q", st.panic)
	}
	if len(st.tail[0]) != maxLine {
		t.Errorf("long line kept %d bytes, want %d", len(st.tail[0]), maxLine)
	}
}

func TestMD5Manifest(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "x"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/x", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	got, err := MD5Manifest(dir)
	if want := "b1946ac92492d2347c6235b4d2611184  a/x\n"; err != nil || got != want {
		t.Errorf("MD5Manifest = %q, %v; want %q", got, err, want)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/a":    "/mnt/a",
		"":          "''",
		"a b":       "'a b'",
		"it's":      `'it'\''s'`,
		"x=1,y=2":   "x=1,y=2",
		"$(reboot)": "'$(reboot)'",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKernelCache(t *testing.T) {
	kdir := t.TempDir()
	fake := func(release string, mtime time.Time) {
		t.Helper()
		root := filepath.Join(kdir, release)
		for name, data := range map[string]string{
			"boot/vmlinuz-" + release:                 "image",
			"lib/modules/" + release + "/modules.dep": "",
		} {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(root, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	fake("6.1.0-1-amd64", time.Unix(1e9, 0))
	fake("6.1.0-2-amd64", time.Unix(2e9, 0))
	if err := os.MkdirAll(filepath.Join(kdir, "6.1.0-3-amd64", "boot"), 0o755); err != nil { // incomplete
		t.Fatal(err)
	}
	if _, err := cachedKernel(kdir, "6.1.0-3-amd64"); err == nil {
		t.Error("cachedKernel accepted a kernel without image and modules.dep")
	}
	k, err := newestCached(kdir)
	if err != nil || k.Release != "6.1.0-2-amd64" || k.Image != filepath.Join(kdir, "6.1.0-2-amd64/boot/vmlinuz-6.1.0-2-amd64") {
		t.Errorf("newestCached = %+v, %v", k, err)
	}
	pruneKernels(kdir, "6.1.0-1-amd64", t.Logf)
	ents, _ := os.ReadDir(kdir)
	if len(ents) != 1 || ents[0].Name() != "6.1.0-1-amd64" {
		t.Errorf("after pruning: %v", ents)
	}
}

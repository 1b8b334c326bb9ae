package fuse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/storefs/storefs/vfs"
)

// MountOptions configure a kernel mount.
type MountOptions struct {
	Options

	// AllowOther lets users other than the mounting one use the mount
	// (mount option allow_other; a non-root user needs user_allow_other
	// in /etc/fuse.conf).
	AllowOther bool

	// Force clears a stale mount left at the mountpoint by a daemon that
	// died ("transport endpoint is not connected") instead of failing.
	Force bool

	// Debug logs every FUSE request and reply at debug level.
	Debug bool
}

// maxIO is the largest READ the kernel sends (max_read, max_pages).
const maxIO = 1 << 20

// Server is a kernel FUSE mount of a vfs.FS being served. Its serving
// goroutines belong to it: they end when the filesystem is unmounted, by
// Unmount or from outside (umount, fusermount3 -u).
type Server struct {
	dir  string
	srv  *fuse.Server
	log  *slog.Logger
	done chan struct{} // closed when the serving loop has ended
	once sync.Once
	err  error
}

// Mount mounts fsys read-only on dir and serves it until it is unmounted.
// dir must be an existing, empty directory; a stale FUSE mount there is
// reported with how to clear it, or cleared with opts.Force.
//
// The mount is read-only with default_permissions, named storefs (fsname
// and subtype). Entries and attributes are cached forever, files keep
// their page cache across opens, READ and readahead go up to 1 MiB,
// directory operations run in parallel, and files of a store whose blobs
// vfs serves as trusted local files (vfs.FS.LocalBlobFiles) use FUSE
// passthrough where the kernel and privileges allow it; otherwise reads
// are spliced from the blob file. Prefetching workers run while it is
// mounted (see prefetch.go).
func Mount(dir string, fsys *vfs.FS, opts MountOptions) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	opts.Logger = log
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if err := checkMountpoint(abs, opts.Force, log); err != nil {
		return nil, err
	}
	raw, state := newFileSystem(fsys, opts.Options)
	mo := &fuse.MountOptions{
		AllowOther: opts.AllowOther,
		// ro and default_permissions: the kernel refuses writes and
		// checks permission bits itself (as on a real /nix/store).
		Options:              []string{"ro", "default_permissions"},
		DirectMount:          true,
		DirectMountFlags:     syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		FsName:               "storefs",
		Name:                 "storefs",
		MaxWrite:             maxIO,
		MaxReadAhead:         maxIO,
		MaxBackground:        64,
		IgnoreSecurityLabels: true,
		EnableSymlinkCaching: true,
		Debug:                opts.Debug,
		Logger:               slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// go-fuse recovers a panic in a request handler and answers
		// EIO; without this it would report it through Logger, at debug.
		PanicHandler: func(p any) fuse.Status {
			log.Error("fuse: request handler panicked; answering EIO", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			return fuse.EIO
		},
	}
	srv, err := fuse.NewServer(raw, abs, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", abs, err)
	}
	s := &Server{dir: abs, srv: srv, log: log, done: make(chan struct{})}
	if state.pf != nil {
		state.pf.start()
	}
	go func() {
		defer close(s.done)
		srv.Serve()
		if state.pf != nil {
			state.pf.stop()
		}
	}()
	if err := srv.WaitMount(); err != nil {
		s.Unmount()
		return nil, fmt.Errorf("mount %s: %w", abs, err)
	}
	if state.pt != nil {
		state.pt.enable(srv)
	} else {
		log.Info("fuse: passthrough off; reads go through the daemon", "reason", "the store does not keep blobs as trusted local files")
	}
	setReadahead(abs, maxIO, log)
	return s, nil
}

// Dir returns the absolute mountpoint.
func (s *Server) Dir() string { return s.dir }

// Done is closed when the filesystem is no longer served: after Unmount, or
// after an unmount from outside.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the filesystem is no longer served.
func (s *Server) Wait() { <-s.done }

// busyGrace is how long Unmount waits for the serving loop after a lazy
// unmount of a busy mount; then processes still holding files get
// ENOTCONN when the daemon exits.
const busyGrace = 2 * time.Second

// Unmount unmounts the filesystem and waits for the serving loop to end.
// A mount still in use (open files, a shell's working directory) is
// detached lazily, so nothing stays mounted whatever happens. Calling it
// again, or after an unmount from outside, does nothing.
func (s *Server) Unmount() error {
	s.once.Do(func() {
		select {
		case <-s.done:
			return // unmounted from outside
		default:
		}
		if err := s.srv.Unmount(); err != nil {
			s.log.Warn("fuse: mount busy, detaching it lazily", "dir", s.dir, "err", err)
			if err := detach(s.dir); err != nil {
				s.err = fmt.Errorf("unmount %s: %w", s.dir, err)
				return
			}
			select {
			case <-s.done:
			case <-time.After(busyGrace):
				s.log.Warn("fuse: files still open on the detached mount; they fail once the daemon exits", "dir", s.dir)
			}
			return
		}
		<-s.done
	})
	return s.err
}

// detach unmounts dir lazily: it disappears from the namespace at once.
func detach(dir string) error {
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err == nil {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkMountpoint fails with a message that says what to do unless dir
// is an existing empty directory that is not a mount point. A stale FUSE
// mount (its daemon died) is cleared if force is set.
func checkMountpoint(dir string, force bool, log *slog.Logger) error {
	if isStale(dir) {
		if !force {
			return fmt.Errorf("mountpoint %s is a stale FUSE mount (transport endpoint is not connected): its daemon exited without unmounting; "+
				"clear it with `fusermount3 -u %s` (or `umount -l %s` as root), or pass --force", dir, dir, dir)
		}
		log.Warn("fuse: clearing a stale mount", "dir", dir)
		if err := detach(dir); err != nil {
			return fmt.Errorf("clear stale mount at %s: %w", dir, err)
		}
	}
	_, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist (create it with mkdir)", dir)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if fstype, ok := mountedAt(dir); ok {
		return fmt.Errorf("mountpoint %s is already a mount point (%s); unmount it first", dir, fstype)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	switch {
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("mountpoint %s is not a directory", dir)
	case err != nil && !errors.Is(err, io.EOF):
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	case len(names) > 0:
		return fmt.Errorf("mountpoint %s is not empty (it holds %q); mount on an empty directory", dir, names[0])
	}
	return nil
}

// isStale reports whether dir is a FUSE mount whose daemon is gone. stat
// of such a mountpoint may still succeed from the kernel's attribute
// cache; statfs always asks the daemon.
func isStale(dir string) bool {
	var sfs unix.Statfs_t
	err := unix.Statfs(dir, &sfs)
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// mountedAt reports whether dir is a mount point in /proc/self/mounts, and
// its filesystem type.
func mountedAt(dir string) (string, bool) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", false
	}
	defer f.Close()
	fstype, found := "", false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && unescapeMount(fields[1]) == dir {
			fstype, found = fields[2], true // the last one is on top
		}
	}
	return fstype, found
}

// unescapeMount undoes the octal escapes of /proc/self/mounts (\040 for a
// space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// setReadahead raises the mount's readahead window to n bytes (the kernel
// starts FUSE mounts at 128 KiB). Best effort: it needs root.
func setReadahead(dir string, n int, log *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(n>>10)), 0); err != nil {
		log.Debug("fuse: cannot raise readahead", "file", p, "err", err)
	}
}

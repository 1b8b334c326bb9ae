package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
)

// NeedHost returns the Host for booting guests, or skips t (fails it under
// STOREFS_E2E=1) when qemu, a static busybox, kmod's modprobe or the guest
// kernel cannot be had.
func NeedHost(t testing.TB) *Host {
	t.Helper()
	e2etest.NeedCommand(t, "qemu-system-x86_64")
	e2etest.NeedCommand(t, "busybox")
	e2etest.NeedCommand(t, "modprobe")
	start := time.Now()
	h, err := FindHost(t.Context(), t.Logf)
	if err != nil {
		e2etest.Missing(t, "no guest for kernel clients: %v", err)
	}
	t.Logf("vm: guest kernel %s ready in %v", h.Kernel.Release, time.Since(start).Round(time.Millisecond))
	return h
}

// Run boots a guest that runs s and turns its report into test results:
// one subtest per check (a failed check's output is in its error), and an
// error on t with the end of the console when the guest did not finish.
// The console is streamed to t's log, prefixed "guest: ". Without the
// tools it skips (see NeedHost). The Result is returned for checks judged
// on the Go side (Capture, Inodes).
func Run(t *testing.T, opts Options, s *Script) *Result {
	t.Helper()
	return NeedHost(t).Run(t, opts, s)
}

// Run is the package's Run on a Host found once, e.g. shared by several
// tests of a package.
func (h *Host) Run(t *testing.T, opts Options, s *Script) *Result {
	t.Helper()
	res, err := Boot(t.Context(), h, opts, s, func(line string) { t.Log("guest: " + line) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vm: initrd %v, qemu %v (guest uptime: /init at %v, done at %v)", res.InitrdBuild.Round(time.Millisecond),
		res.Wall.Round(time.Millisecond), res.InitAt, res.DoneAt)
	res.Report(t)
	return res
}

// Report makes t fail for every check of the script that failed or was
// never reported, each as a subtest named after the check, and for a guest
// that did not finish.
func (r *Result) Report(t *testing.T) {
	t.Helper()
	if !r.Done {
		t.Errorf("vm: %s; last console lines:\n%s", r.Problem, strings.Join(r.ConsoleTail, "\n"))
	}
	for _, name := range r.expected {
		c, ok := r.Check(name)
		t.Run(name, func(t *testing.T) {
			t.Helper()
			switch {
			case !ok:
				t.Error("the guest never reported this check (see the error above)")
			case c.Status == Fail:
				t.Errorf("guest check failed after %v: %s\n%s", c.Elapsed, c.Detail, strings.Join(c.Output, "\n"))
			case c.Status == Skip:
				t.Skipf("not run: %s", c.Detail)
			default:
				t.Logf("passed in %v", c.Elapsed)
			}
		})
	}
}

// ListLong returns what "ls -la" prints for dir in the guest, rendered on
// the host by busybox as "ls -lan" in UTC (the guest knows no user names
// and has no time zone). Use it with Script.LsLa when the served tree also
// exists on the host; ".." of a mount's root is the guest's, so compare a
// subdirectory there.
func ListLong(ctx context.Context, busybox, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, busybox, "ls", "-lan", dir)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("vm: busybox ls -lan %s: %w", dir, err)
	}
	return string(out), nil
}

package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	DefaultMemoryMiB = 512
	DefaultTimeout   = 120 * time.Second
)

// Options configure one VM run. The zero value boots a 512 MiB guest with
// networking and the modules the script's mounts need.
type Options struct {
	// Features adds kernel modules beyond those the script needs.
	Features []Feature
	// Modules names more kernel modules to load (with their dependencies).
	Modules []string
	// MemoryMiB is the guest's memory; 0 means DefaultMemoryMiB.
	MemoryMiB int
	// Timeout bounds the whole run, boot to power-off; qemu is killed when
	// it runs out. 0 means DefaultTimeout.
	Timeout time.Duration
	// QEMUArgs are appended to qemu's command line, e.g. from
	// VirtiofsQEMUArgs.
	QEMUArgs []string
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
}

// Host is what booting a guest takes from the host: qemu, a static busybox
// and the guest kernel. FindHost finds them.
type Host struct {
	// QEMU is the path of qemu-system-x86_64.
	QEMU string
	// Busybox is the path of a statically linked busybox.
	Busybox string
	// Kernel is the guest kernel.
	Kernel *Kernel
}

// FindHost looks up qemu-system-x86_64 and busybox in PATH and fetches the
// guest kernel into CacheDir (see FetchKernel), giving up after
// FetchTimeout.
func FindHost(ctx context.Context, logf func(string, ...any)) (*Host, error) {
	q, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := CheckStaticBusybox(bb); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	k, err := FetchKernel(ctx, CacheDir(), logf)
	if err != nil {
		return nil, err
	}
	return &Host{QEMU: q, Busybox: bb, Kernel: k}, nil
}

// Status is the outcome of one guest check.
type Status string

// Check outcomes as the guest reports them.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP" // an earlier required check failed
)

// CheckResult is what the guest reported for one check.
type CheckResult struct {
	// Name is the check's name.
	Name string
	// Status is PASS, FAIL or SKIP.
	Status Status
	// Elapsed is the check's duration measured in the guest.
	Elapsed time.Duration
	// Detail says why a check failed or was skipped.
	Detail string
	// Output holds the lines the check printed (and, on failure, the tail
	// of the guest's dmesg).
	Output []string
}

// Inodes parses the output of a check added with Script.Inodes into a map
// from path to inode number.
func (c CheckResult) Inodes() (map[string]uint64, error) {
	m := map[string]uint64{}
	for _, l := range c.Output {
		ino, name, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("vm: check %s: not an 'INODE PATH' line: %q", c.Name, l)
		}
		n, err := strconv.ParseUint(ino, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("vm: check %s: line %q: %w", c.Name, l, err)
		}
		m[name] = n
	}
	return m, nil
}

// Result is the outcome of one VM run.
type Result struct {
	// Checks are the reported checks, in the order the guest ran them.
	Checks []CheckResult
	// Done reports whether the guest got to the end of its script.
	Done bool
	// Problem says why the guest did not finish ("" when Done): a timeout,
	// a kernel panic, qemu exiting early.
	Problem string
	// ConsoleTail is the end of the guest's console, for failure messages.
	ConsoleTail []string
	// InitrdBuild is the time taken to resolve modules and write the initrd.
	InitrdBuild time.Duration
	// Wall is the time from starting qemu to its exit.
	Wall time.Duration
	// InitAt is the guest's uptime when /init started (kernel boot time).
	InitAt time.Duration
	// DoneAt is the guest's uptime when its script finished; Wall minus
	// DoneAt is the time spent in firmware, loading and decompressing the
	// kernel, and powering off.
	DoneAt time.Duration

	expected []string
}

// Check returns the result of the named check.
func (r *Result) Check(name string) (CheckResult, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return CheckResult{}, false
}

// consoleTailLines is how much of the console a failure shows.
const consoleTailLines = 40

// Boot builds the initrd for s, boots the guest with qemu, waits until it
// powers off, crashes or runs out of time (Options.Timeout, or ctx), and
// returns what it reported. console, if not nil, receives every console
// line as it arrives (from another goroutine; Boot returns only after the
// last call). An error means the VM could not be started; a guest that
// fails is described by the Result.
func Boot(ctx context.Context, h *Host, opts Options, s *Script, console func(line string)) (*Result, error) {
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = DefaultMemoryMiB
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	res := &Result{expected: s.names()}
	start := time.Now()
	dir, err := os.MkdirTemp("", "storefs-vm-")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd")
	mods, err := ResolveModules(ctx, h.Kernel, moduleNames(append(opts.Features, s.features...), opts.Modules))
	if err != nil {
		return nil, err
	}
	if err := writeInitrd(initrd, h.Busybox, mods, s); err != nil {
		return nil, err
	}
	res.InitrdBuild = time.Since(start)

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.QEMU, qemuArgs(h, opts, initrd)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	start = time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("vm: starting qemu: %w", err)
	}
	pw.Close()
	parsed := make(chan consoleState, 1)
	go func() { parsed <- readConsole(pr, res, console) }()
	waitErr := cmd.Wait()
	res.Wall = time.Since(start)
	var st consoleState
	select {
	case st = <-parsed:
	case <-time.After(5 * time.Second):
		// Something else holds the pipe open; stop reading.
		pr.Close()
		st = <-parsed
	}
	res.ConsoleTail = st.tail
	switch {
	case res.Done:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.Problem = fmt.Sprintf("the guest did not finish within %v; qemu was killed", opts.Timeout)
	case ctx.Err() != nil:
		res.Problem = fmt.Sprintf("the run was cancelled (%v); qemu was killed", ctx.Err())
	case st.panic != "":
		res.Problem = "the guest kernel panicked: " + st.panic
	case waitErr != nil:
		res.Problem = fmt.Sprintf("qemu failed (%v) before the guest finished", waitErr)
	default:
		res.Problem = "the guest powered off without reporting STOREFS-DONE"
	}
	return res, nil
}

// writeInitrd writes the base archive followed by the script's archive.
func writeInitrd(path, busybox string, modules []string, s *Script) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = WriteBaseInitrd(w, busybox, modules)
	if err == nil {
		err = s.archive(w)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("vm: initrd: %w", cerr)
	}
	return err
}

func qemuArgs(h *Host, opts Options, initrd string) []string {
	cmdline := append([]string{"console=ttyS0", "panic=-1", "quiet", "loglevel=3"}, opts.KernelArgs...)
	args := []string{
		"-nographic", "-no-reboot",
		"-m", strconv.Itoa(opts.MemoryMiB),
		"-kernel", h.Kernel.Image,
		"-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
		"-netdev", "user,id=n0",
		// romfile= skips iPXE: nothing boots from the network.
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	// Not chosen by probing /dev/kvm: some hosts have a /dev/kvm that
	// cannot run a stock kernel, and the guest then hangs before printing.
	if os.Getenv(EnvKVM) == "1" {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg")
	}
	return append(args, opts.QEMUArgs...)
}

// VirtiofsQEMUArgs returns the qemu arguments that attach a virtiofsd
// listening on socket as a virtiofs device with tag. vhost-user needs the
// guest's memory shared: memMiB must be Options.MemoryMiB (or
// DefaultMemoryMiB).
func VirtiofsQEMUArgs(socket, tag string, memMiB int) []string {
	if memMiB == 0 {
		memMiB = DefaultMemoryMiB
	}
	return []string{
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", memMiB),
		"-numa", "node,memdev=mem",
		"-chardev", "socket,id=vfs,path=" + socket,
		"-device", "vhost-user-fs-pci,chardev=vfs,tag=" + tag,
	}
}

// consoleState is what readConsole gathers besides the checks.
type consoleState struct {
	tail  []string
	panic string
}

// ansi matches the terminal control sequences firmware and the kernel send.
var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z])`)

// maxLine bounds one console line; longer ones are cut.
const maxLine = 64 << 10

// readConsole reads the console until EOF, records the guest's reports in
// res and passes every line to console.
func readConsole(r io.Reader, res *Result, console func(string)) consoleState {
	var st consoleState
	br := bufio.NewReaderSize(r, 64<<10)
	outputs := map[string][]string{}
	for {
		line, err := readLine(br)
		if line != "" || err == nil {
			line = ansi.ReplaceAllString(strings.ReplaceAll(line, "\r", ""), "")
			if console != nil {
				console(line)
			}
			st.tail = append(st.tail, line)
			if len(st.tail) > consoleTailLines {
				st.tail = st.tail[1:]
			}
			if i := strings.Index(line, "Kernel panic"); i >= 0 && st.panic == "" {
				st.panic = line[i:]
			}
			parseReport(line, res, outputs)
		}
		if err != nil {
			return st
		}
	}
}

// readLine returns the next line without its newline, cut to maxLine.
func readLine(br *bufio.Reader) (string, error) {
	var b bytes.Buffer
	for {
		frag, err := br.ReadSlice('\n')
		if b.Len() < maxLine {
			b.Write(frag[:min(len(frag), maxLine-b.Len())])
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return strings.TrimSuffix(b.String(), "\n"), err
	}
}

// parseReport records one STOREFS-* line of the guest in res. outputs
// holds the output lines of checks not reported yet.
func parseReport(line string, res *Result, outputs map[string][]string) {
	i := strings.Index(line, "STOREFS-")
	if i < 0 {
		return
	}
	kind, rest, _ := strings.Cut(line[i:], " ")
	switch kind {
	case "STOREFS-BOOT":
		res.InitAt = parseUptime(rest)
	case "STOREFS-OUT":
		name, text, _ := strings.Cut(rest, " ")
		outputs[name] = append(outputs[name], text)
	case "STOREFS-CHECK":
		f := strings.SplitN(rest, " ", 4)
		if len(f) < 3 {
			return
		}
		c := CheckResult{Name: f[0], Status: Status(f[1]), Output: outputs[f[0]]}
		delete(outputs, f[0])
		if secs, err := strconv.ParseFloat(f[2], 64); err == nil {
			c.Elapsed = time.Duration(secs * float64(time.Second))
		}
		if len(f) == 4 {
			c.Detail = f[3]
		}
		if c.Status != Pass && c.Status != Fail && c.Status != Skip {
			c.Detail = fmt.Sprintf("unknown status %q %s", c.Status, c.Detail)
			c.Status = Fail
		}
		res.Checks = append(res.Checks, c)
	case "STOREFS-DONE":
		res.Done = true
		res.DoneAt = parseUptime(rest)
	}
}

// parseUptime reads "uptime=SECONDS ..." as the guest prints it.
func parseUptime(s string) time.Duration {
	v, ok := strings.CutPrefix(s, "uptime=")
	if !ok {
		return 0
	}
	v, _, _ = strings.Cut(v, " ")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Second)).Round(10 * time.Millisecond)
}

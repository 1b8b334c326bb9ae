package vm

import (
	"strings"
	"testing"
	"time"
)

// The tests here boot guests that fail on purpose and check that the
// harness reports each failure instead of passing or hanging.

func TestGuestCheckFailures(t *testing.T) {
	t.Parallel()
	h := NeedHost(t)
	s := NewScript()
	s.Check("fails", "echo oops\nfalse\necho not reached")
	s.Check("slow", "sleep 30", Timeout(2*time.Second))
	s.ExpectOutput("differs", "echo got", "want\n")
	s.Check("gate", "exit 3", Required(true))
	s.Check("after", "true")
	res, err := Boot(t.Context(), h, Options{Timeout: 90 * time.Second}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Done {
		t.Fatalf("guest did not finish: %s\n%s", res.Problem, strings.Join(res.ConsoleTail, "\n"))
	}
	for _, tc := range []struct {
		name   string
		status Status
		detail string
		output string
	}{
		{"modules", Pass, "modules", ""},
		{"network", Pass, "", "10.0.2.15/24"},
		{"fails", Fail, "exit status 1", "oops"},
		{"slow", Fail, "killed after the 2s timeout", ""},
		{"differs", Fail, "exit status 1", "+got"},
		{"gate", Fail, "exit status 3", ""},
		{"after", Skip, "gate failed", ""},
	} {
		c, ok := res.Check(tc.name)
		switch {
		case !ok:
			t.Errorf("%s: not reported", tc.name)
		case c.Status != tc.status || !strings.Contains(c.Detail, tc.detail) ||
			!strings.Contains(strings.Join(c.Output, "\n"), tc.output):
			t.Errorf("%s: got %s %q output %q, want %s %q with output containing %q",
				tc.name, c.Status, c.Detail, c.Output, tc.status, tc.detail, tc.output)
		}
		if tc.name == "fails" && strings.Contains(strings.Join(c.Output, "\n"), "not reached") {
			t.Errorf("fails: ran on after a failing command (not sh -e): %q", c.Output)
		}
	}
	if c, _ := res.Check("slow"); c.Elapsed < 2*time.Second || c.Elapsed > 10*time.Second {
		t.Errorf("slow: took %v in the guest, want its 2s timeout", c.Elapsed)
	}
}

func TestGuestPanic(t *testing.T) {
	t.Parallel()
	h := NeedHost(t)
	s := NewScript()
	s.Check("crash", "echo c > /proc/sysrq-trigger\nsleep 30")
	s.Check("after", "true")
	res, err := Boot(t.Context(), h, Options{Timeout: 90 * time.Second}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Done || !strings.Contains(res.Problem, "panicked") {
		t.Errorf("got Done=%v Problem=%q, want a kernel panic\n%s", res.Done, res.Problem, strings.Join(res.ConsoleTail, "\n"))
	}
	if _, ok := res.Check("crash"); ok {
		t.Errorf("crash: reported although the guest died in it")
	}
	if res.Wall > 60*time.Second {
		t.Errorf("qemu ran %v: the panic did not end it (panic=-1 and -no-reboot)", res.Wall)
	}
}

func TestGuestHang(t *testing.T) {
	t.Parallel() // mostly an idle guest waiting for the timeout
	h := NeedHost(t)
	s := NewScript()
	s.Check("hang", "sleep 600", Timeout(10*time.Minute))
	start := time.Now()
	res, err := Boot(t.Context(), h, Options{Timeout: 20 * time.Second}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Done || !strings.Contains(res.Problem, "did not finish within 20s") {
		t.Errorf("got Done=%v Problem=%q, want a timeout", res.Done, res.Problem)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Boot returned after %v, want about its 20s timeout", d)
	}
}

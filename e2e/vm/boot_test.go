package vm

import (
	"strings"
	"testing"
)

// TestBoot boots a guest with no mounts: kernel, modules, network, one
// check, power-off.
func TestBoot(t *testing.T) {
	s := NewScript()
	s.Capture("uname", "uname -r")
	res := Run(t, Options{}, s)
	c, ok := res.Check("uname")
	if ok && (len(c.Output) != 1 || !strings.HasSuffix(c.Output[0], "-amd64")) {
		t.Errorf("uname -r printed %q, want a Debian amd64 kernel release", c.Output)
	}
}

package server

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/e2e/e2etest"
)

// TestExampleConfigLoads loads docs/examples/config.yaml as the daemon
// would.
func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	cfg, err := config.Load(config.Sources{File: "../docs/examples/config.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HasFrontend() || cfg.NFS.Listen == "" || len(cfg.FUSE) != 1 {
		t.Errorf("example configures %+v", cfg)
	}
}

// TestConfigDocCoversEveryKey checks that docs/config.md has a row for
// every key of the schema.
func TestConfigDocCoversEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		if !bytes.Contains(doc, []byte("| `"+key+"` |")) {
			t.Errorf("docs/config.md has no row for %s", key)
		}
	}
}

// TestPlistWellFormed parses the launchd job as XML and checks the keys
// launchd needs.
func TestPlistWellFormed(t *testing.T) {
	b, err := os.ReadFile("../docs/examples/org.storefs.plist")
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var keys []string
	inKey := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("org.storefs.plist is not well-formed XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			inKey = tk.Name.Local == "key"
		case xml.CharData:
			if inKey {
				keys = append(keys, string(tk))
			}
		case xml.EndElement:
			inKey = false
		}
	}
	for _, want := range []string{"Label", "ProgramArguments", "RunAtLoad", "KeepAlive"} {
		if !strings.Contains(strings.Join(keys, ","), want) {
			t.Errorf("plist lacks key %s (has %v)", want, keys)
		}
	}
}

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit, with
// ExecStart pointing at a real binary (verify checks that it exists).
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := e2etest.NeedCommand(t, "systemd-analyze")
	b, err := os.ReadFile("../docs/examples/storefs.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("Type=notify")) {
		t.Error("the unit is not Type=notify")
	}
	exe, err := os.Executable() // any executable file will do
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "storefs.service")
	b = bytes.ReplaceAll(b, []byte("/usr/local/bin/storefs"), []byte(exe))
	if err := os.WriteFile(unit, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	// verify exits 0 on unknown keys but prints them: any output fails.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

package binarycache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// credentials are HTTP basic-auth credentials for one host.
type credentials struct {
	login, password string
}

// netrcPath returns $NETRC, else ~/.netrc ("" if there is no home).
func netrcPath() string {
	if p := os.Getenv("NETRC"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".netrc")
}

// netrcCredentials returns the credentials the netrc file at path gives
// host: its `machine HOST` entry, else its `default` entry, else nil. A
// missing file is no error.
func netrcCredentials(path, host string) (*credentials, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netrc: %w", err)
	}
	return parseNetrc(string(b), host)
}

// parseNetrc finds host's credentials in netrc text (tokens separated by
// white space: machine NAME / default, then login, password, account;
// macdef bodies run to the next blank line and are skipped).
func parseNetrc(text, host string) (*credentials, error) {
	var (
		match, def *credentials
		cur        *credentials
		curIsHost  bool
	)
	lines := strings.Split(text, "\n")
	var toks []string
	for i := 0; i < len(lines); i++ {
		fs := strings.Fields(lines[i])
		if len(fs) > 0 && fs[0] == "macdef" {
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			}
			continue
		}
		if j := indexComment(fs); j >= 0 {
			fs = fs[:j]
		}
		toks = append(toks, fs...)
	}
	finish := func() {
		if cur == nil {
			return
		}
		if curIsHost && match == nil {
			match = cur
		}
		cur = nil
	}
	for i := 0; i < len(toks); i++ {
		arg := func() (string, error) {
			if i+1 >= len(toks) {
				return "", fmt.Errorf("netrc: %q needs a value", toks[i])
			}
			i++
			return toks[i], nil
		}
		switch toks[i] {
		case "machine":
			finish()
			name, err := arg()
			if err != nil {
				return nil, err
			}
			cur, curIsHost = &credentials{}, strings.EqualFold(name, host)
		case "default":
			finish()
			cur, curIsHost = &credentials{}, false
			def = cur
		case "login", "password", "account":
			key := toks[i]
			v, err := arg()
			if err != nil {
				return nil, err
			}
			if cur == nil {
				continue
			}
			switch key {
			case "login":
				cur.login = v
			case "password":
				cur.password = v
			}
		}
	}
	finish()
	if match != nil {
		return match, nil
	}
	return def, nil
}

func indexComment(fs []string) int {
	for i, f := range fs {
		if strings.HasPrefix(f, "#") {
			return i
		}
	}
	return -1
}

package storeclient

import "strconv"

// MaxNameLen is the longest entry name, in bytes.
const MaxNameLen = 255

// MaxSymlinkTargetLen is the longest symlink target, in bytes.
const MaxSymlinkTargetLen = 4095

// Name is a validated directory entry name: 1-255 bytes, not "." or "..",
// without "/" or NUL. It need not be UTF-8; a Go string holds raw bytes.
type Name string

// NewName validates b as an entry name.
func NewName[T ~string | ~[]byte](b T) (Name, error) {
	if err := CheckName(b); err != nil {
		return "", err
	}
	return Name(b), nil
}

// CheckName reports whether b is a valid entry name, with a ValidationError
// naming RuleName if it is not.
func CheckName[T ~string | ~[]byte](b T) error {
	n := len(b)
	switch {
	case n == 0:
		return invalid(RuleName, "empty name")
	case n > MaxNameLen:
		return invalid(RuleName, "name of %d bytes is longer than %d", n, MaxNameLen)
	case string(b) == "." || string(b) == "..":
		return invalid(RuleName, "name %q is not allowed", string(b))
	}
	for i := 0; i < n; i++ {
		if b[i] == '/' || b[i] == 0 {
			return invalid(RuleName, "name %s contains %q", strconv.Quote(string(b)), b[i])
		}
	}
	return nil
}

// SymlinkTarget is a validated symlink target: 1-4095 bytes without NUL.
type SymlinkTarget string

// NewSymlinkTarget validates b as a symlink target.
func NewSymlinkTarget[T ~string | ~[]byte](b T) (SymlinkTarget, error) {
	switch {
	case len(b) == 0:
		return "", invalid(RuleSymlinkTarget, "empty symlink target")
	case len(b) > MaxSymlinkTargetLen:
		return "", invalid(RuleSymlinkTarget, "symlink target of %d bytes is longer than %d", len(b), MaxSymlinkTargetLen)
	}
	for i := 0; i < len(b); i++ {
		if b[i] == 0 {
			return "", invalid(RuleSymlinkTarget, "symlink target %q contains NUL", string(b))
		}
	}
	return SymlinkTarget(b), nil
}

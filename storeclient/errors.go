package storeclient

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by every backend error that means "this blob,
// Directory or PathInfo is not in the store".
var ErrNotFound = errors.New("not found")

// ErrCorrupt is wrapped by errors that mean stored or received data does not
// match its digest or is otherwise malformed.
var ErrCorrupt = errors.New("corrupt data")

// Rule names one validation rule of castore.md. ValidationError carries it
// so callers and tests can tell which rule rejected a value.
type Rule string

// The validation rules of castore.md ("Validation of a Directory" and
// "Store paths"), plus the size rule.
const (
	RuleSorted        Rule = "names-sorted"    // each list strictly ascending by raw bytes
	RuleUnique        Rule = "names-unique"    // names unique across the three lists
	RuleName          Rule = "name"            // 1-255 bytes, not . or .., no / or NUL
	RuleDigestLength  Rule = "digest-length"   // every digest exactly 32 bytes
	RuleSymlinkTarget Rule = "symlink-target"  // 1-4095 bytes, no NUL
	RuleNodeUnset     Rule = "node-unset"      // a Node with no case set
	RuleAnonymousName Rule = "anonymous-name"  // a node that must be anonymous has a name
	RuleSize          Rule = "directory-size"  // size overflow or a child's size disagrees
	RuleStorePath     Rule = "store-path"      // store path syntax
	RulePathInfo      Rule = "pathinfo"        // PathInfo consistency
	RuleDecode        Rule = "protobuf-decode" // the bytes are not a valid message
)

// ValidationError reports a value rejected by one validation rule.
type ValidationError struct {
	Rule   Rule
	Detail string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid (rule %s): %s", e.Rule, e.Detail)
}

// Is makes errors.Is(err, ErrCorrupt) true for validation errors: data that
// breaks a rule is corrupt wherever it came from.
func (e *ValidationError) Is(target error) bool {
	return target == ErrCorrupt
}

func invalid(rule Rule, format string, args ...any) error {
	return &ValidationError{Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

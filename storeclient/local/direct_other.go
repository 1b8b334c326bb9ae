//go:build !linux

package local

import (
	"errors"
	"os"
)

// errDirectRefused never matches here: direct writes are never turned on.
var errDirectRefused = errors.New("direct writes are not used on this system")

// setDirect reports that there are no direct writes here; turning them
// off succeeds.
func setDirect(f *os.File, on bool) error {
	if on {
		return errors.ErrUnsupported
	}
	return nil
}

// openDirect reports that there are no direct writes here.
func openDirect(path string) (*os.File, error) { return nil, errors.ErrUnsupported }

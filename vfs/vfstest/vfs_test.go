package vfstest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/storefs/storefs/vfs"
	"github.com/storefs/storefs/vfs/vfstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestVFS runs the conformance suite against vfs itself, without a protocol.
func TestVFS(t *testing.T) {
	vfstest.Run(t, vfstest.Frontend{
		Serve: func(t *testing.T, fsys *vfs.FS) vfstest.Client { return vfstest.Direct(t.Context(), fsys) },
	})
}

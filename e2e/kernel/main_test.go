// Package kernel_test checks storefs with the Linux 6.1 kernel's own NFSv3
// and 9P2000.L clients in a QEMU guest (package e2e/vm): a source tree with
// every interesting case is imported into a store and served in-process on
// 127.0.0.1, and the guest mounts it and compares what it sees with
// expectations rendered on the host from the source tree and from vfs.
//
//	go test ./e2e/kernel                 # skips without qemu
//	STOREFS_E2E=1 go test ./e2e/kernel   # fails without qemu (CI)
package kernel_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

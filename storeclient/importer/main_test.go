package importer_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if an import leaves a goroutine
// behind (walker, workers, blob streamers, decompressors).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

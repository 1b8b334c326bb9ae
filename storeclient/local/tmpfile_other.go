//go:build !linux

package local

import "os"

// tmpfileLinker stands for the Linux O_TMPFILE blob writer; elsewhere
// PutSmallBlob always takes the portable path.
type tmpfileLinker struct{}

// create reports that there is no O_TMPFILE here.
func (*tmpfileLinker) create(dir, final string, data []byte) error { return errNoTmpfile }

// startWriteback does nothing here: the blobs are written to disk by
// syncBlobs.
func startWriteback(f *os.File, off, n int64) {}

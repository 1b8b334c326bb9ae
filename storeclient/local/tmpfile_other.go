//go:build !linux

package local

// tmpfileLinker stands for the Linux O_TMPFILE blob writer; elsewhere
// PutSmallBlob always takes the portable path.
type tmpfileLinker struct{}

// create reports that there is no O_TMPFILE here.
func (*tmpfileLinker) create(dir, final string, data []byte) error { return errNoTmpfile }

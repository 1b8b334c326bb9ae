// Command lsprobe lists a directory for the guest checks: one name per
// line, then exit 0; or the error of open or getdents and exit 1. Busybox
// ls, find and du drop a failed getdents silently, so a refused listing
// cannot be seen with them.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lsprobe DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	f, err := os.Open(dir)
	if err != nil {
		fail("can't open", dir, err)
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		fail("reading directory", dir, err)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Println(n)
	}
}

// fail prints what libc's perror would ("Operation not permitted") and
// exits 1.
func fail(what, dir string, err error) {
	msg := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg = errno.Error()
		if msg != "" && msg[0] >= 'a' && msg[0] <= 'z' {
			msg = string(msg[0]-'a'+'A') + msg[1:]
		}
	}
	fmt.Fprintf(os.Stderr, "lsprobe: %s '%s': %s\n", what, dir, msg)
	os.Exit(1)
}

// Package clientstr formats strings that clients send for log lines and
// error messages: at most a bounded prefix is kept, so that a hostile
// client cannot make the daemon allocate or write much by sending long
// names or paths.
package clientstr

import (
	"fmt"
	"strconv"
)

// MaxLogged is how many bytes of a client string Quote shows.
const MaxLogged = 128

// Quote returns s quoted as strconv.Quote does, cut to its first MaxLogged
// bytes with the full length noted when it is longer.
func Quote(s string) string {
	if len(s) <= MaxLogged {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:MaxLogged]), len(s))
}

// Trim returns s cut to its first MaxLogged bytes, with the full length
// noted when it is longer: for log attributes, which the log handler
// quotes and escapes itself.
func Trim(s string) string {
	if len(s) <= MaxLogged {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:MaxLogged], len(s))
}

// TrimBytes is Trim for a byte slice; it copies at most MaxLogged bytes.
func TrimBytes(b []byte) string {
	if len(b) <= MaxLogged {
		return string(b)
	}
	return fmt.Sprintf("%s… (%d bytes)", b[:MaxLogged], len(b))
}

// QuoteBytes is Quote for a byte slice; it copies at most MaxLogged bytes.
func QuoteBytes(b []byte) string {
	if len(b) <= MaxLogged {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(b[:MaxLogged])), len(b))
}

package nfs

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/storefs/storefs/internal/netguard"
)

// Defaults for the zero fields of Options.
const (
	DefaultMaxRecordSize = 512 << 10
	DefaultMaxRead       = 1 << 20
	DefaultIdleTimeout   = 5 * time.Minute
	DefaultMaxInFlight   = 16
	DefaultWriteTimeout  = time.Minute
	DefaultReplyMemory   = 256 << 20
	DefaultHandleCache   = 4096
)

// Options configure a Server (config key nfs). The zero value is the
// documented default of every option.
type Options struct {
	// Clients are the client networks, besides loopback, that the
	// listener admits (the daemon wraps every listener in a
	// netguard.Listener that enforces them); MOUNT EXPORT lists them as
	// the export's groups. Nil: loopback only.
	Clients *netguard.AllowList

	// RequireSecurePort refuses calls from source ports ≥ 1024 with
	// AUTH_ERROR (AUTH_TOOWEAK), like knfsd's "secure" export option.
	// Default off: guests behind qemu user networking and libnfs as a
	// normal user connect from unprivileged ports.
	RequireSecurePort bool

	// MaxRecordSize is the largest RPC record a client may send; a larger
	// one closes its connection. Reads are requested in small records, and
	// FSINFO advertises a write size far below this. Default
	// DefaultMaxRecordSize.
	MaxRecordSize int

	// MaxRead is the largest READ the server answers in one reply
	// (FSINFO rtmax and rtpref); larger requests are shortened. Default
	// DefaultMaxRead (1 MiB, the Linux client's largest rsize).
	MaxRead uint32

	// IdleTimeout closes a connection that sends nothing, or stops in the
	// middle of a record, or does not take its replies, for this long.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration

	// WriteTimeout bounds how long one reply may take to be written: a
	// client that does not take its replies loses the connection. Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration

	// MaxReplyMemory bounds the reply buffers of all connections
	// together: each call being answered holds one buffer of MaxRead (and
	// a little) until its reply is written, so without a bound clients
	// that do not read their replies could pin MaxInFlight of them per
	// connection. A call waits for a free buffer (its connection is read
	// no further meanwhile). Default DefaultReplyMemory (256 MiB: 255
	// buffers at the default MaxRead); at least one buffer.
	MaxReplyMemory int

	// MaxInFlight bounds the calls of one connection the server works on
	// at once; further calls wait in the client's socket buffer. Default
	// DefaultMaxInFlight.
	MaxInFlight int

	// HandleCacheSize is how many resolved file handles are remembered
	// (least recently used dropped first), so that a stream of READs does
	// not ask the store about the same file every time. Default
	// DefaultHandleCache.
	HandleCacheSize int

	// Sendfile chooses which READ replies are sent with sendfile(2)
	// (Linux): a READ of 16 KiB or more from a blob that is a file on a
	// local filesystem (the embedded store, trusted-local) can go from
	// the page cache to the socket without a copy through the server.
	// The default, SendfileRemote, does so for clients on other hosts
	// and copies for loopback clients.
	Sendfile SendfileMode

	// Logger receives one line per refused connection, mount and
	// connection error, with the client address. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxRecordSize <= 0 {
		o.MaxRecordSize = DefaultMaxRecordSize
	}
	if o.MaxRead == 0 {
		o.MaxRead = DefaultMaxRead
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxReplyMemory <= 0 {
		o.MaxReplyMemory = DefaultReplyMemory
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.HandleCacheSize <= 0 {
		o.HandleCacheSize = DefaultHandleCache
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// SendfileMode is when READ replies are sent with sendfile(2).
type SendfileMode int

const (
	// SendfileRemote uses sendfile for clients on other hosts and
	// copies the data for loopback clients. On loopback the kernel runs
	// the receiving side's TCP processing inside the sender's send call,
	// once per push; sendfile pushes every 64 KiB (splice_to_socket's
	// batch of 16 pages) where one copied write of a 1 MiB reply pushes
	// a few times, so there copying costs less CPU per byte
	// (docs/performance.md, NFS).
	SendfileRemote SendfileMode = iota
	// SendfileAlways uses sendfile for every client.
	SendfileAlways
	// SendfileNever copies every READ reply from memory.
	SendfileNever
)

// usedFor reports whether replies to the client at remote are sent with
// sendfile.
func (m SendfileMode) usedFor(remote net.Addr) bool {
	switch m {
	case SendfileAlways:
		return true
	case SendfileRemote:
		a, ok := remote.(*net.TCPAddr)
		return ok && !a.IP.IsLoopback()
	}
	return false
}

// String names the mode as the documentation does.
func (m SendfileMode) String() string {
	switch m {
	case SendfileRemote:
		return "remote"
	case SendfileAlways:
		return "always"
	case SendfileNever:
		return "never"
	}
	return fmt.Sprintf("SendfileMode(%d)", int(m))
}

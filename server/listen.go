package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/storefs/storefs/config"
	"github.com/storefs/storefs/internal/netguard"
)

// listen opens a TCP or unix listener for a parsed address and wraps it in
// a netguard.Listener with opts: every network frontend admits and bounds
// its connections there. A TCP address that is not loopback needs an
// allow-list. A unix socket file left by a daemon that is gone is removed
// first.
func listen(l config.Listen, opts netguard.Options) (*netguard.Listener, error) {
	lis, err := listenSocket(l)
	if err != nil {
		return nil, err
	}
	if err := netguard.CheckListenAddr(lis.Addr(), opts.Allow); err != nil {
		lis.Close()
		return nil, err
	}
	return netguard.New(lis, opts), nil
}

func listenSocket(l config.Listen) (net.Listener, error) {
	if l.Unix == "" {
		return net.Listen("tcp", l.String())
	}
	if fi, err := os.Lstat(l.Unix); err == nil && fi.Mode()&os.ModeSocket != 0 {
		c, err := net.Dial("unix", l.Unix)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process serves this socket", l.Unix)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(l.Unix)
		}
	}
	return net.Listen("unix", l.Unix)
}

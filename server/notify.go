package server

import (
	"fmt"
	"net"
	"os"
)

// Notify sends state ("READY=1", "STOPPING=1", "RELOADING=1", "STATUS=…")
// to the service manager over $NOTIFY_SOCKET, as sd_notify(3) does. Without
// NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

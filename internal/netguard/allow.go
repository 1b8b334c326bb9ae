// Package netguard admits and bounds the client connections of a network
// listener. Every listener of storefs (NFS, 9P, gRPC, metrics) goes through
// it, so that one rule decides who may connect and how long a connection
// may hold a slot:
//
//   - an allow-list of client networks: loopback and unix-socket clients are
//     always admitted (a socket's file mode governs the latter), any other
//     client only from a listed network, checked for each connection;
//   - a connection cap: at the cap, the least recently active connection is
//     closed to admit the new one, so that idle or silent connections cannot
//     lock real clients out;
//   - a handshake deadline: a connection that has not completed its first
//     message soon after it was accepted is closed;
//   - an idle timeout: a connection that has completed no message for that
//     long is closed.
//
// What a message is belongs to the protocol: its server calls Active (or
// Conn.Active) each time it has read a whole request. A protocol whose
// server cannot say so (HTTP, gRPC) sets Options.ActiveOnRead, and every
// read that returns bytes counts instead.
package netguard

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
)

// AllowList is a set of client networks that may be replaced while
// listeners use it (a reload). Its methods may be called concurrently.
type AllowList struct {
	nets atomic.Pointer[[]netip.Prefix]
}

// NewAllowList returns an AllowList of nets.
func NewAllowList(nets []netip.Prefix) *AllowList {
	a := &AllowList{}
	a.Set(nets)
	return a
}

// Set replaces the networks; connections accepted later are checked
// against the new ones.
func (a *AllowList) Set(nets []netip.Prefix) {
	nets = slices.Clone(nets)
	a.nets.Store(&nets)
}

// Networks returns the networks, besides loopback, whose clients are
// admitted. A nil AllowList has none.
func (a *AllowList) Networks() []netip.Prefix {
	if a == nil {
		return nil
	}
	return slices.Clone(*a.nets.Load())
}

// Allows reports whether a client at addr may connect: a unix-socket
// client, a loopback client, or one in the listed networks. A nil
// AllowList admits only the first two.
func (a *AllowList) Allows(addr net.Addr) bool {
	ip, ok := clientIP(addr)
	if !ok {
		return addr != nil && addr.Network() == "unix"
	}
	if ip.IsLoopback() {
		return true
	}
	if a == nil {
		return false
	}
	for _, p := range *a.nets.Load() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP returns the IP address of a TCP or UDP peer, IPv4-mapped IPv6
// addresses as IPv4.
func clientIP(addr net.Addr) (netip.Addr, bool) {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return netip.Addr{}, false
	}
	nip, ok := netip.AddrFromSlice(ip)
	return nip.Unmap(), ok
}

// CheckListenAddr refuses to serve other hosts without an allow-list: a TCP
// address that is not loopback needs allow to list at least one network.
func CheckListenAddr(addr net.Addr, allow *AllowList) error {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	if ip.Unmap().IsLoopback() || len(allow.Networks()) > 0 {
		return nil
	}
	return fmt.Errorf("serving %s to other hosts needs an allow-list of client networks", addr)
}

package nfs

import "net/netip"

// MOUNT v3 procedures answered by the record layer (RFC 1813 appendix I).
// go-nfs answers NULL, MNT and UMNT.

// mountExport answers EXPORT: one export, "/", listing the client networks
// the daemon admits (loopback and Options.Clients) as its groups. libnfs
// asks for it after every MNT.
func (c *conn) mountExport(_ *call, w *xdrWriter) error {
	w.bool(true) // an export follows
	w.string("/")
	for _, p := range append(loopbackNetworks(), c.s.opts.Clients.Networks()...) {
		w.bool(true)
		w.string(p.String())
	}
	w.bool(false) // end of groups
	w.bool(false) // end of exports
	return nil
}

// mountDump answers DUMP with an empty mount list: the server keeps no
// per-client mount state (UMNT changes nothing), so it has none to report.
func (c *conn) mountDump(_ *call, w *xdrWriter) error {
	w.bool(false)
	return nil
}

// mountVoid answers UMNTALL: nothing to forget.
func (c *conn) mountVoid(*call, *xdrWriter) error { return nil }

// loopbackNetworks are the networks every listener admits.
func loopbackNetworks() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

package nfs

// MOUNT v3 procedures answered by the record layer (RFC 1813 appendix I).
// go-nfs answers NULL, MNT and UMNT.

// mountExport answers EXPORT: one export, "/", listing the allowed client
// networks as its groups. libnfs asks for it after every MNT.
func (c *conn) mountExport(_ *call, w *xdrWriter) error {
	w.bool(true) // an export follows
	w.string("/")
	for _, p := range c.s.opts.AllowedNetworks {
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

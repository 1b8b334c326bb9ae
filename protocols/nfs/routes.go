package nfs

// route says who answers one procedure: handle, or go-nfs when handle is
// nil.
type route struct {
	name   string
	handle func(c *conn, cl *call, w *xdrWriter) error
}

// routeTable maps MOUNT v3 and NFSv3 procedure numbers to routes.
type routeTable struct {
	mount [6]route
	nfs   [22]route
}

// defaultRoutes is who answers what, and why. go-nfs v0.0.4 answers the
// procedures it gets right: MOUNT NULL, MNT (through gonfsHandler.Mount and
// ToHandle) and UMNT, and NFS NULL. The record layer answers the rest,
// because go-nfs v0.0.4:
//   - MOUNT EXPORT, DUMP, UMNTALL: has no handler, and its PROC_UNAVAIL
//     answer breaks libnfs's mount (it expects the export list);
//   - GETATTR, READLINK, FSSTAT: encodes os.FileMode bits into the mode,
//     reports "used" as the size (symlinks and directories get blocks),
//     and writes FSSTAT's invarsec as 8 bytes instead of 4;
//   - LOOKUP, READ: maps every error to NOENT or ACCES, so missing or
//     corrupt data (EIO) and reads of directories (ISDIR) are misreported;
//   - ACCESS: grants EXECUTE on every file whatever its mode;
//   - READDIR, READDIRPLUS: re-reads and sorts the whole directory on every
//     call (O(n²) for a big directory) instead of resuming at the cookie;
//   - FSINFO: advertises 1 GiB reads and writes;
//   - PATHCONF: says chown is not restricted;
//   - SETATTR: answers NOTSUPP, COMMIT SERVERFAULT, and the other writes
//     walk the path before they refuse: every write must be ROFS.
func defaultRoutes() routeTable {
	var t routeTable
	t.mount = [6]route{
		{name: "NULL"},
		{name: "MNT"},
		{name: "DUMP", handle: (*conn).mountDump},
		{name: "UMNT"},
		{name: "UMNTALL", handle: (*conn).mountVoid},
		{name: "EXPORT", handle: (*conn).mountExport},
	}
	t.nfs = [22]route{
		{name: "NULL"},
		{name: "GETATTR", handle: (*conn).getattr},
		{name: "SETATTR", handle: refuse(2)},
		{name: "LOOKUP", handle: (*conn).lookup},
		{name: "ACCESS", handle: (*conn).access},
		{name: "READLINK", handle: (*conn).readlink},
		{name: "READ", handle: (*conn).read},
		{name: "WRITE", handle: refuse(2)},
		{name: "CREATE", handle: refuse(2)},
		{name: "MKDIR", handle: refuse(2)},
		{name: "SYMLINK", handle: refuse(2)},
		{name: "MKNOD", handle: refuse(2)},
		{name: "REMOVE", handle: refuse(2)},
		{name: "RMDIR", handle: refuse(2)},
		{name: "RENAME", handle: refuse(4)},
		{name: "LINK", handle: refuse(3)},
		{name: "READDIR", handle: (*conn).readdir},
		{name: "READDIRPLUS", handle: (*conn).readdirplus},
		{name: "FSSTAT", handle: (*conn).fsstat},
		{name: "FSINFO", handle: (*conn).fsinfo},
		{name: "PATHCONF", handle: (*conn).pathconf},
		{name: "COMMIT", handle: refuse(2)},
	}
	return t
}

// goNFSRoutes sends every NFS procedure go-nfs implements to go-nfs: for
// measuring what go-nfs costs, not for serving.
func goNFSRoutes() routeTable {
	t := defaultRoutes()
	for i := range t.nfs {
		t.nfs[i].handle = nil
	}
	return t
}

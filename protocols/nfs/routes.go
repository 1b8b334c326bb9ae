package nfs

// route names one procedure and says who answers it.
type route struct {
	name   string
	handle func(c *conn, cl *call, w *xdrWriter) error
}

// routeTable maps MOUNT v3 and NFSv3 procedure numbers to routes. It is a
// field of Server, so that tests can replace a route.
type routeTable struct {
	mount [6]route
	nfs   [22]route
}

// defaultRoutes answers every MOUNT v3 and NFSv3 procedure from vfs: reads
// with the store's data, every write with NFS3ERR_ROFS (NFS3ERR_STALE for a
// handle that names nothing) after decoding the handle it names. The
// record layer answers the calls that reach no route (other programs,
// versions, procedures) itself: see dispatch.
func defaultRoutes() routeTable {
	var t routeTable
	t.mount = [6]route{
		{name: "NULL", handle: (*conn).null},
		{name: "MNT", handle: (*conn).mount},
		{name: "DUMP", handle: (*conn).mountDump},
		{name: "UMNT", handle: (*conn).unmount},
		{name: "UMNTALL", handle: (*conn).null},
		{name: "EXPORT", handle: (*conn).mountExport},
	}
	t.nfs = [22]route{
		{name: "NULL", handle: (*conn).null},
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

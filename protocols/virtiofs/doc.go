// Package virtiofs serves the store to virtual machines as a virtio-fs
// device: a vhost-user-fs back-end that a VMM (QEMU, cloud-hypervisor,
// crosvm) connects to over a unix socket, and that the guest mounts with
//
//	mount -t virtiofs TAG /nix/store
//
// virtio-fs is the FUSE protocol carried over virtqueues, so this package
// is only a transport: every FUSE request is answered by a
// go-fuse RawFileSystem — the FUSE frontend's, built from the one vfs —
// through fuse.ProtocolServer.HandleRequest. The guest sees exactly what
// the host's FUSE mount shows.
//
// # Using it
//
// The daemon creates one Server per socket:
//
//	srv := &virtiofs.Server{
//		Socket:     "/run/storefs/virtiofs.sock",
//		Tag:        "storefs", // informational: the VMM sets the tag
//		FileSystem: func() fuse.RawFileSystem { return newRawFS() },
//		SocketMode: 0o660,
//		SocketOwner: &virtiofs.SocketOwner{UID: 0, GID: kvmGID},
//		Logger:     log,
//	}
//	if err := srv.Listen(); err != nil { ... } // fail early on a bad path
//	go srv.Serve(ctx)                           // returns nil after Close or ctx
//	...
//	srv.Close()                                 // ends every VM session, removes the socket
//
// FileSystem is called at every FUSE_INIT: each guest mount (and each
// mount after an unmount or reboot of the same guest) gets its own node
// table, while all of them read the same vfs.
//
// One socket serves any number of VMs at once, each connection its own
// session; a VMM that disconnects ends only its session and the socket
// accepts the next. A stale socket file is replaced at start; any other
// file is not.
//
// # The transport
//
// The vhost-user messages handled are GET/SET_FEATURES (VERSION_1,
// INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES), GET/SET_PROTOCOL_FEATURES
// (MQ, REPLY_ACK), SET_OWNER, RESET_OWNER, SET_MEM_TABLE (the guest's RAM
// fds received with SCM_RIGHTS and mapped shared), SET_VRING_NUM, _ADDR,
// _BASE, _KICK, _CALL, _ERR, _ENABLE, GET_VRING_BASE and GET_QUEUE_NUM (64
// queues: the high-priority queue and up to 63 request queues). Any other
// request, a malformed message or a failed one drops that VM's
// connection with one log line.
//
// Each started split virtqueue (size up to 1024) has a poller goroutine
// that waits on the kick eventfd and pops descriptor chains, and workers
// (Server.Workers per request queue) that hand each chain's readable
// buffers (the request) and writable buffers (the reply) to HandleRequest
// as slices of guest memory — READ data is written straight into the
// guest's pages — then put it on the used ring and signal the call
// eventfd as EVENT_IDX or NO_INTERRUPT ask. Every guest address is
// translated through the memory table and bounds-checked; a chain that
// loops, points outside guest memory, nests indirect tables or puts
// readable after writable buffers drops the connection with one log line.
// A FUSE request go-fuse cannot parse gets an error reply. Memory faults
// in guest memory (a VMM that shrinks the memory file) are recovered into
// a dropped connection too.
//
// The poller serves the last chain it pops itself, so a guest that sends
// one request at a time (a cat, a find) costs no goroutine handoff. The
// eventfds are used with plain system calls and kept out of Go's network
// poller, and a busy poller yields to the scheduler every few
// milliseconds (yieldEvery) so the runtime's sysmon does not take its P
// away: each guest request then wakes about one thread, as in a C
// back-end (see eventFD).
//
// The package is Linux-only.
package virtiofs

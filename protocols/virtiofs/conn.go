//go:build linux

package virtiofs

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// maxQueues is how many virtqueues a connection may use (GET_QUEUE_NUM):
// the high-priority queue and up to 63 request queues.
const maxQueues = 64

// connConfig is what a connection takes from its Server.
type connConfig struct {
	newFS   func() fuse.RawFileSystem
	opts    fuse.MountOptions
	workers int // concurrent requests per request queue
	log     *slog.Logger
}

// conn is one front-end (VMM) connection: the vhost-user session, its
// guest memory, its queues and its FUSE session. Its message loop runs
// in the goroutine that called serve; everything it starts is stopped
// before serve returns.
type conn struct {
	cfg  connConfig
	uc   *net.UnixConn
	wire *wire
	log  *slog.Logger
	fuse *fuseSession

	// Session state, owned by the message loop.
	features         uint64
	protocolFeatures uint64
	mem              *guestMemory
	queues           [maxQueues]queue

	dropped  atomic.Bool
	dropOnce sync.Once
}

// queue is one virtqueue's configuration and, while it runs, its ring.
type queue struct {
	size     uint32
	addr     vringAddr
	haveAddr bool
	base     uint16
	kick     *eventFD
	call     atomic.Pointer[eventFD]
	errFD    *eventFD
	started  bool // SET_VRING_KICK seen, not stopped by GET_VRING_BASE
	disabled bool // SET_VRING_ENABLE 0
	ring     *ring
}

func newConn(uc *net.UnixConn, cfg connConfig) *conn {
	log := cfg.log
	if pid, ok := peerPID(uc); ok {
		log = log.With("vmm_pid", pid)
	}
	return &conn{cfg: cfg, uc: uc, wire: newWire(uc), log: log, fuse: newFuseSession(cfg.newFS, cfg.opts, log)}
}

// peerPID returns the front-end's process ID, for logs.
func peerPID(uc *net.UnixConn) (int32, bool) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	if raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}) != nil || err != nil {
		return 0, false
	}
	return cred.Pid, true
}

// serve runs the message loop until the front-end disconnects, breaks
// the protocol or close is called, then stops everything.
func (c *conn) serve() {
	c.log.Info("virtiofs: VMM connected")
	defer c.teardown()
	for {
		m, err := c.wire.read()
		if err != nil {
			switch {
			case c.dropped.Load():
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
				c.log.Info("virtiofs: VMM disconnected")
			default:
				c.drop(fmt.Errorf("reading a vhost-user message: %w", err))
			}
			return
		}
		err = c.handle(m)
		m.closeFDs()
		if err != nil {
			c.drop(err)
			return
		}
	}
}

// drop ends the connection because of err, with one log line.
func (c *conn) drop(err error) {
	c.dropOnce.Do(func() {
		c.dropped.Store(true)
		c.log.Error("virtiofs: dropping the VMM connection", "err", err)
		c.uc.Close()
	})
}

// close ends the connection from our side (server shutdown).
func (c *conn) close() {
	c.dropOnce.Do(func() {
		c.dropped.Store(true)
		c.uc.Close()
	})
}

// ringFailed is the rings' fatal callback: it signals the queue's error
// eventfd and drops the connection.
func (c *conn) ringFailed(q *queue, index int) func(error) {
	errFD := q.errFD
	return func(err error) {
		if errFD != nil {
			errFD.signal()
		}
		c.drop(fmt.Errorf("queue %d: %w", index, err))
	}
}

func (c *conn) teardown() {
	c.close()
	for i := range c.queues {
		q := &c.queues[i]
		c.stopQueue(q)
		for _, e := range []*eventFD{q.kick, q.call.Swap(nil), q.errFD} {
			if e != nil {
				e.Close()
			}
		}
		q.kick, q.errFD = nil, nil
	}
	c.mem.unmap()
	c.mem = nil
	c.fuse.close()
}

// handle applies one message and replies as the protocol requires.
func (c *conn) handle(m *message) error {
	ackable := c.protocolFeatures&protoReplyAck != 0 && m.flags&flagNeedReply != 0
	var err error
	switch m.req {
	case reqGetFeatures:
		return c.wire.replyU64(m, offeredFeatures)
	case reqGetProtocolFeatures:
		return c.wire.replyU64(m, offeredProtocolFeatures)
	case reqGetQueueNum:
		return c.wire.replyU64(m, maxQueues)
	case reqGetVringBase:
		return c.getVringBase(m)
	case reqSetFeatures:
		err = c.setFeatures(m)
	case reqSetProtocolFeatures:
		var v uint64
		if v, err = m.u64(); err == nil {
			if v&^offeredProtocolFeatures != 0 {
				err = fmt.Errorf("%v: protocol features %#x include some never offered (%#x)", m.req, v, offeredProtocolFeatures)
			} else {
				c.protocolFeatures = v
			}
		}
	case reqSetOwner:
	case reqResetOwner:
		c.reset()
	case reqSetMemTable:
		err = c.setMemTable(m)
	case reqSetVringNum, reqSetVringBase, reqSetVringEnable:
		err = c.setVringState(m)
	case reqSetVringAddr:
		err = c.setVringAddr(m)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		err = c.setVringFD(m)
	default:
		err = fmt.Errorf("unknown vhost-user request %v", m.req)
	}
	if ackable {
		status := uint64(0)
		if err != nil {
			status = 1
		}
		if rerr := c.wire.replyU64(m, status); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

func (c *conn) setFeatures(m *message) error {
	v, err := m.u64()
	if err != nil {
		return err
	}
	if v&^offeredFeatures != 0 {
		return fmt.Errorf("%v: features %#x include some never offered (%#x)", m.req, v, uint64(offeredFeatures))
	}
	c.features = v
	return nil
}

// reset returns the session to its state after connecting (RESET_OWNER).
func (c *conn) reset() {
	for i := range c.queues {
		q := &c.queues[i]
		c.stopQueue(q)
		q.size, q.haveAddr, q.base, q.started, q.disabled = 0, false, 0, false, false
	}
	c.features, c.protocolFeatures = 0, 0
}

func (c *conn) queue(m *message, index uint32) (*queue, error) {
	if index >= maxQueues {
		return nil, fmt.Errorf("%v: queue %d, want below %d", m.req, index, maxQueues)
	}
	return &c.queues[index], nil
}

func (c *conn) setMemTable(m *message) error {
	regions, err := m.memTable()
	if err != nil {
		return err
	}
	fds := m.fds
	m.fds = nil
	mem, err := mapGuestMemory(regions, fds)
	if err != nil {
		return fmt.Errorf("%v: %w", m.req, err)
	}
	// Running rings point into the old table: stop them, swap, restart.
	var running []int
	for i := range c.queues {
		if c.queues[i].ring != nil {
			c.stopQueue(&c.queues[i])
			running = append(running, i)
		}
	}
	c.mem.unmap()
	c.mem = mem
	for _, i := range running {
		if err := c.maybeStart(i); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) setVringState(m *message) error {
	index, num, err := m.vringState()
	if err != nil {
		return err
	}
	q, err := c.queue(m, index)
	if err != nil {
		return err
	}
	switch m.req {
	case reqSetVringNum:
		if q.ring != nil {
			return fmt.Errorf("%v: queue %d is running", m.req, index)
		}
		if num == 0 || num > maxQueueSize || num&(num-1) != 0 {
			return fmt.Errorf("%v: queue %d size %d, want a power of 2 up to %d", m.req, index, num, maxQueueSize)
		}
		q.size = num
	case reqSetVringBase:
		if q.ring != nil {
			return fmt.Errorf("%v: queue %d is running", m.req, index)
		}
		if num > 0xffff {
			return fmt.Errorf("%v: queue %d base %d is over 16 bits", m.req, index, num)
		}
		q.base = uint16(num)
	case reqSetVringEnable:
		if num > 1 {
			return fmt.Errorf("%v: queue %d state %d, want 0 or 1", m.req, index, num)
		}
		q.disabled = num == 0
		if q.disabled {
			c.stopQueue(q)
			return nil
		}
		return c.maybeStart(int(index))
	}
	return nil
}

func (c *conn) setVringAddr(m *message) error {
	a, err := m.vringAddr()
	if err != nil {
		return err
	}
	q, err := c.queue(m, a.index)
	if err != nil {
		return err
	}
	running := q.ring != nil
	c.stopQueue(q)
	q.addr, q.haveAddr = a, true
	if running {
		return c.maybeStart(int(a.index))
	}
	return nil
}

func (c *conn) setVringFD(m *message) error {
	v, err := m.u64()
	if err != nil {
		return err
	}
	index := uint32(v & 0xff)
	if v&^uint64(0xff|vringNoFD) != 0 {
		return fmt.Errorf("%v: reserved bits set in %#x", m.req, v)
	}
	q, err := c.queue(m, index)
	if err != nil {
		return err
	}
	var f *eventFD
	if v&vringNoFD == 0 {
		fd, err := m.takeFD()
		if err != nil {
			return err
		}
		f = newEventFD(fd, fmt.Sprintf("queue %d %v eventfd", index, m.req))
	} else if len(m.fds) != 0 {
		return fmt.Errorf("%v: file descriptor passed with the no-fd flag", m.req)
	}
	switch m.req {
	case reqSetVringKick:
		if f == nil {
			return fmt.Errorf("%v: queue %d: polling without a kick eventfd is not supported", m.req, index)
		}
		c.stopQueue(q)
		if q.kick != nil {
			q.kick.Close()
		}
		q.kick, q.started = f, true
		return c.maybeStart(int(index))
	case reqSetVringCall:
		// Running rings pick the new one up at their next push.
		if old := q.call.Swap(f); old != nil {
			old.Close()
		}
	case reqSetVringErr:
		running := q.ring != nil
		c.stopQueue(q)
		if q.errFD != nil {
			q.errFD.Close()
		}
		q.errFD = f
		if running {
			return c.maybeStart(int(index))
		}
	}
	return nil
}

func (c *conn) getVringBase(m *message) error {
	index, _, err := m.vringState()
	if err != nil {
		return err
	}
	q, err := c.queue(m, index)
	if err != nil {
		return err
	}
	c.stopQueue(q)
	q.started = false
	if q.kick != nil {
		q.kick.Close()
		q.kick = nil
	}
	return c.wire.replyVringState(m, index, uint32(q.base))
}

// maybeStart starts queue i if it is fully configured, kicked and not
// disabled. As in libvhost-user, a ring starts with its kick and does not
// wait for SET_VRING_ENABLE 1, which not every front-end sends; an
// explicit SET_VRING_ENABLE 0 stops it.
func (c *conn) maybeStart(i int) error {
	q := &c.queues[i]
	if q.ring != nil || !q.started || q.disabled {
		return nil
	}
	if q.size == 0 || !q.haveAddr {
		return fmt.Errorf("queue %d kicked before its size and addresses were set", i)
	}
	rc, err := newRingConfig(c.mem, q.size, q.addr, c.features)
	if err != nil {
		return fmt.Errorf("queue %d: %w", i, err)
	}
	workers := c.cfg.workers
	if i == 0 {
		workers = 1 // the high-priority queue: FORGET and INTERRUPT
	}
	q.ring = startRing(rc, q.base, q.kick, &q.call, workers, c.fuse.handle, c.ringFailed(q, i))
	return nil
}

// stopQueue stops q's ring, if it runs, and keeps where it stopped.
func (c *conn) stopQueue(q *queue) {
	if q.ring == nil {
		return
	}
	q.base = q.ring.stop()
	q.ring = nil
}

//go:build linux

package virtiofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Split virtqueue layout (virtio 1.x, section 2.7), all little endian:
//
//	descriptor table  16 bytes per entry: addr u64, len u32, flags u16, next u16
//	available ring    flags u16, idx u16, ring[size] u16, used_event u16
//	used ring         flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16
//
// The driver (guest) owns the available ring and the descriptors, the
// device (us) the used ring. idx fields are free-running 16-bit counters.

const (
	descNext     = 1 // VIRTQ_DESC_F_NEXT
	descWrite    = 2 // VIRTQ_DESC_F_WRITE: device-writable
	descIndirect = 4 // VIRTQ_DESC_F_INDIRECT

	availNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT

	descSize = 16
	// maxQueueSize is the largest ring we accept (QEMU's limit for
	// vhost-user-fs is 1024).
	maxQueueSize = 1024
	// maxIndirect bounds an indirect descriptor table: a 1 MiB FUSE
	// request needs about 260 entries, so this leaves ample room while
	// bounding what a hostile guest makes us walk.
	maxIndirect = 8192
)

// errChain is wrapped by every error about a malformed descriptor chain
// or ring: the guest broke the protocol and its connection is dropped.
var errChain = errors.New("malformed virtqueue")

// ringConfig is what a ring needs to run, translated from the front-end's
// addresses.
type ringConfig struct {
	size     uint16
	desc     []byte // 16*size bytes
	avail    []byte // 6+2*size bytes
	used     []byte // 6+8*size bytes
	mem      *guestMemory
	eventIdx bool // VIRTIO_RING_F_EVENT_IDX negotiated
	indirect bool // VIRTIO_RING_F_INDIRECT_DESC negotiated
}

// newRingConfig checks a ring's size and alignment and translates its
// front-end addresses into guest memory.
func newRingConfig(mem *guestMemory, size uint32, addr vringAddr, features uint64) (ringConfig, error) {
	if mem == nil {
		return ringConfig{}, errors.New("ring started before SET_MEM_TABLE")
	}
	if size == 0 || size > maxQueueSize || size&(size-1) != 0 {
		return ringConfig{}, fmt.Errorf("queue size %d: want a power of 2 up to %d", size, maxQueueSize)
	}
	rc := ringConfig{size: uint16(size), mem: mem, eventIdx: features&featEventIdx != 0, indirect: features&featIndirectDesc != 0}
	var err error
	n := uint64(size)
	if rc.desc, err = mem.translateUser(addr.desc, descSize*n); err != nil {
		return ringConfig{}, fmt.Errorf("descriptor table: %w", err)
	}
	if rc.avail, err = mem.translateUser(addr.avail, 6+2*n); err != nil {
		return ringConfig{}, fmt.Errorf("available ring: %w", err)
	}
	if rc.used, err = mem.translateUser(addr.used, 6+8*n); err != nil {
		return ringConfig{}, fmt.Errorf("used ring: %w", err)
	}
	// The spec's alignments (16, 2, 4); the 16-bit index accesses below
	// rely on them.
	if uintptr(unsafe.Pointer(&rc.desc[0]))%16 != 0 || uintptr(unsafe.Pointer(&rc.avail[0]))%2 != 0 || uintptr(unsafe.Pointer(&rc.used[0]))%4 != 0 {
		return ringConfig{}, fmt.Errorf("misaligned ring (desc %#x, avail %#x, used %#x)", addr.desc, addr.avail, addr.used)
	}
	return rc, nil
}

// chain is one popped request: its head index and its buffers, the
// device-readable ones (in) before the device-writable ones (out), as
// slices of guest memory.
type chain struct {
	head uint16
	in   [][]byte
	out  [][]byte
}

// handlerFunc serves one request, writing the reply into c.out, and
// returns how many bytes it wrote.
type handlerFunc func(c *chain) uint32

// ring runs one started virtqueue: a poller goroutine that waits for
// kicks and pops chains, and workers that serve them and push them onto
// the used ring. All of them are owned by the ring and stopped by stop.
type ring struct {
	cfg   ringConfig
	kick  *eventFD
	call  *atomic.Pointer[eventFD]
	fatal func(error) // reports a guest protocol violation; drops the connection

	lastAvail uint16 // next available entry to pop; poller only, read after stop

	usedMu        sync.Mutex
	usedIdx       uint16 // next used entry
	signalledUsed uint16 // usedIdx at the last notification decision
	signalValid   bool

	fenceWord atomic.Uint32

	stopping atomic.Bool
	done     chan struct{} // closed when the poller and its workers are gone
}

// startRing starts serving a ring from the available index base with
// workers concurrent requests.
func startRing(cfg ringConfig, base uint16, kick *eventFD, call *atomic.Pointer[eventFD], workers int, handle handlerFunc, fatal func(error)) *ring {
	r := &ring{cfg: cfg, kick: kick, call: call, fatal: fatal, lastAvail: base, done: make(chan struct{})}
	// The used index continues where the ring's memory says: the driver
	// zeroes it when it sets a ring up, and a stopped ring had pushed
	// every chain it popped.
	r.usedIdx = r.loadUsedIdx()
	go r.poll(max(workers, 1), handle)
	return r
}

// stop stops popping, waits for requests in progress to be pushed and
// returns the next available index (GET_VRING_BASE's answer).
func (r *ring) stop() uint16 {
	r.stopping.Store(true)
	// Wakes a poller blocked in its kick wait, or makes the wait it is
	// about to start return at once.
	r.kick.signal()
	<-r.done
	return r.lastAvail
}

// fence is a full memory barrier: a locked read-modify-write, which
// neither the CPU nor the compiler moves plain loads and stores across.
func (r *ring) fence() { r.fenceWord.Add(1) }

// The ring indices are 16-bit fields the other side changes
// concurrently; a naturally aligned 16-bit load or store is atomic on
// every platform Go runs vhost-user on, and the fences order them.

func load16(b []byte, off int) uint16 {
	_ = b[off+1]
	return *(*uint16)(unsafe.Pointer(&b[off]))
}

func store16(b []byte, off int, v uint16) {
	_ = b[off+1]
	*(*uint16)(unsafe.Pointer(&b[off])) = v
}

func (r *ring) availIdx() uint16   { return load16(r.cfg.avail, 2) }
func (r *ring) availFlags() uint16 { return load16(r.cfg.avail, 0) }
func (r *ring) usedEvent() uint16  { return load16(r.cfg.avail, 4+2*int(r.cfg.size)) }
func (r *ring) loadUsedIdx() uint16 {
	return load16(r.cfg.used, 2)
}
func (r *ring) setAvailEvent(v uint16) { store16(r.cfg.used, 4+8*int(r.cfg.size), v) }

// yieldEvery is how often a busy poller yields to the scheduler: under
// the runtime's 10 ms preemption threshold (forcePreemptNS) with room for
// one request served after it. A yield is not free: Gosched wakes another
// thread, which usually takes the poller over while this one parks (two
// context switches). At 2 ms that was 1 000 hand-overs per second of a
// guest's cat (measured: 10 100–10 400 context switches per 8 192 READs,
// 9 250–9 700 at 5 ms; virtiofsd's 8 300).
const yieldEvery = 5 * time.Millisecond

// poll is the ring's poller goroutine.
func (r *ring) poll(workers int, handle handlerFunc) {
	var wg sync.WaitGroup
	free := make(chan *chain, workers)
	for range workers {
		free <- &chain{}
	}
	work := make(chan *chain)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(work, free, handle)
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
		close(r.done)
	}()
	defer r.recoverFault("polling")
	// Stop cleanly even when the guest faults our memory accesses (a
	// front-end that shrinks the memory file after sharing it).
	debug.SetPanicOnFault(true)

	lastYield := time.Now()
	for !r.stopping.Load() {
		// Requests queued before the ring started need no kick.
		if err := r.drain(work, free, handle); err != nil {
			r.fatal(err)
			return
		}
		// A poller serving a guest that sends one request at a time
		// never passes through the scheduler: it goes from the kick
		// wait (a system call) to serving and back. After 10 ms of that
		// the runtime's sysmon takes it for a goroutine hogging its P
		// and takes the P away during every wait, so each kick wakes
		// sysmon as well (two more thread wake-ups per request, on a
		// CPU the VMM needs). Yielding now and then shows the scheduler
		// progress; it costs one hand-over every yieldEvery.
		if now := time.Now(); now.Sub(lastYield) >= yieldEvery {
			runtime.Gosched()
			lastYield = now
		}
		if err := r.kick.wait(); err != nil {
			if !r.stopping.Load() {
				r.fatal(fmt.Errorf("reading the kick eventfd: %w", err))
			}
			return
		}
	}
}

// drain pops every available chain and hands it to a worker (the last
// one it serves itself), then (with
// EVENT_IDX) asks for a kick on the next one, re-checking to close the
// race with a driver that added one meanwhile.
func (r *ring) drain(work chan<- *chain, free chan *chain, handle handlerFunc) error {
	for !r.stopping.Load() {
		avail := r.availIdx()
		r.fence() // read the ring entries only after the index
		if pending := avail - r.lastAvail; pending > r.cfg.size {
			return fmt.Errorf("available index jumped from %d to %d on a ring of %d: %w", r.lastAvail, avail, r.cfg.size, errChain)
		}
		if avail == r.lastAvail {
			if !r.cfg.eventIdx {
				return nil
			}
			r.setAvailEvent(r.lastAvail)
			r.fence()
			if r.availIdx() == r.lastAvail {
				return nil
			}
			continue
		}
		for avail != r.lastAvail && !r.stopping.Load() {
			c := <-free
			head := load16(r.cfg.avail, 4+2*int(r.lastAvail%r.cfg.size))
			if err := r.readChain(c, head); err != nil {
				free <- c
				return err
			}
			r.lastAvail++
			if r.lastAvail == avail {
				// The last one available: serve it here. A lone
				// request (a guest's find, stat, getdents: one at a
				// time) then costs no goroutine handoff.
				r.serve(c, free, handle)
				continue
			}
			work <- c
		}
	}
	return nil
}

// work is one worker goroutine.
func (r *ring) work(work <-chan *chain, free chan<- *chain, handle handlerFunc) {
	debug.SetPanicOnFault(true)
	for c := range work {
		r.serve(c, free, handle)
	}
}

func (r *ring) serve(c *chain, free chan<- *chain, handle handlerFunc) {
	defer func() { free <- c }()
	defer r.recoverFault("serving a request")
	n := handle(c)
	r.push(c.head, n)
}

// recoverFault turns a memory fault in guest memory into a dropped
// connection instead of a crashed daemon.
func (r *ring) recoverFault(what string) {
	if v := recover(); v != nil {
		r.fatal(fmt.Errorf("fault while %s: %v: %w", what, v, errChain))
	}
}

// readDesc decodes descriptor i of table.
func readDesc(table []byte, i uint32) (addr uint64, length uint32, flags, next uint16) {
	d := table[descSize*i : descSize*i+descSize]
	le := binary.LittleEndian
	return le.Uint64(d), le.Uint32(d[8:]), le.Uint16(d[12:]), le.Uint16(d[14:])
}

// readChain resolves the chain starting at head into c's buffers,
// rejecting loops, indices out of range, buffers outside guest memory,
// readable buffers after writable ones and misplaced indirect tables.
func (r *ring) readChain(c *chain, head uint16) error {
	c.head = head
	c.in, c.out = c.in[:0], c.out[:0]
	if head >= r.cfg.size {
		return fmt.Errorf("chain head %d out of a ring of %d: %w", head, r.cfg.size, errChain)
	}
	table := r.cfg.desc
	limit := uint32(r.cfg.size)
	i := uint32(head)
	indirect := false
	for visited := uint32(0); ; visited++ {
		if visited >= limit {
			return fmt.Errorf("chain at head %d is longer than %d descriptors (a loop?): %w", head, limit, errChain)
		}
		addr, length, flags, next := readDesc(table, i)
		if flags&descIndirect != 0 {
			if !r.cfg.indirect {
				return fmt.Errorf("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC: %w", errChain)
			}
			if visited != 0 || indirect || flags&descNext != 0 {
				return fmt.Errorf("indirect descriptor inside a chain or an indirect table (head %d): %w", head, errChain)
			}
			if length == 0 || length%descSize != 0 || length/descSize > maxIndirect {
				return fmt.Errorf("indirect table of %d bytes: %w", length, errChain)
			}
			t, err := r.cfg.mem.appendGuest(nil, addr, uint64(length))
			if err != nil {
				return fmt.Errorf("indirect table: %w: %w", err, errChain)
			}
			if len(t) != 1 {
				return fmt.Errorf("indirect table at %#x spans memory regions: %w", addr, errChain)
			}
			table, limit, i, indirect = t[0], length/descSize, 0, true
			visited = ^uint32(0) // the loop's increment wraps it to 0
			continue
		}
		if length > 0 {
			var err error
			if flags&descWrite != 0 {
				c.out, err = r.cfg.mem.appendGuest(c.out, addr, uint64(length))
			} else {
				if len(c.out) > 0 {
					return fmt.Errorf("device-readable descriptor after a writable one (head %d): %w", head, errChain)
				}
				c.in, err = r.cfg.mem.appendGuest(c.in, addr, uint64(length))
			}
			if err != nil {
				return fmt.Errorf("descriptor %d of chain %d: %w: %w", i, head, err, errChain)
			}
		}
		if flags&descNext == 0 {
			return nil
		}
		if uint32(next) >= limit {
			return fmt.Errorf("next descriptor %d out of a table of %d: %w", next, limit, errChain)
		}
		i = uint32(next)
	}
}

// push puts a served chain on the used ring and notifies the driver if
// it wants to be.
func (r *ring) push(head uint16, written uint32) {
	r.usedMu.Lock()
	defer r.usedMu.Unlock()
	e := r.cfg.used[4+8*int(r.usedIdx%r.cfg.size):]
	binary.LittleEndian.PutUint32(e, uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	r.fence() // the element before the index
	r.usedIdx++
	store16(r.cfg.used, 2, r.usedIdx)
	r.fence() // the index before reading the driver's notification wishes
	if r.needNotify() {
		if call := r.call.Load(); call != nil {
			// A call eventfd replaced meanwhile is closed and the
			// signal fails: the front-end checks the new one's state
			// itself.
			call.signal()
		}
	}
}

// needNotify decides whether the driver asked to be interrupted for the
// used entries added since the last decision. Caller holds usedMu.
func (r *ring) needNotify() bool {
	if !r.cfg.eventIdx {
		return r.availFlags()&availNoInterrupt == 0
	}
	old, valid := r.signalledUsed, r.signalValid
	r.signalledUsed, r.signalValid = r.usedIdx, true
	if !valid {
		return true
	}
	// vring_need_event: notify if used_event lies in [old, new).
	event := r.usedEvent()
	return r.usedIdx-event-1 < r.usedIdx-old
}

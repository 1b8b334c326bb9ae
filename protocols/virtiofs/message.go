//go:build linux

package virtiofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// The vhost-user wire format: every message is a 12-byte header
// (request, flags, payload size; little endian) and a payload; file
// descriptors travel as SCM_RIGHTS with the message.

// request is a vhost-user front-end request type.
type request uint32

// The requests this back-end understands. Anything else ends the
// connection: a front-end only sends others after negotiating a protocol
// feature we never offer.
const (
	reqGetFeatures         request = 1
	reqSetFeatures         request = 2
	reqSetOwner            request = 3
	reqResetOwner          request = 4
	reqSetMemTable         request = 5
	reqSetVringNum         request = 8
	reqSetVringAddr        request = 9
	reqSetVringBase        request = 10
	reqGetVringBase        request = 11
	reqSetVringKick        request = 12
	reqSetVringCall        request = 13
	reqSetVringErr         request = 14
	reqGetProtocolFeatures request = 15
	reqSetProtocolFeatures request = 16
	reqGetQueueNum         request = 17
	reqSetVringEnable      request = 18
)

var requestNames = map[request]string{
	reqGetFeatures:         "GET_FEATURES",
	reqSetFeatures:         "SET_FEATURES",
	reqSetOwner:            "SET_OWNER",
	reqResetOwner:          "RESET_OWNER",
	reqSetMemTable:         "SET_MEM_TABLE",
	reqSetVringNum:         "SET_VRING_NUM",
	reqSetVringAddr:        "SET_VRING_ADDR",
	reqSetVringBase:        "SET_VRING_BASE",
	reqGetVringBase:        "GET_VRING_BASE",
	reqSetVringKick:        "SET_VRING_KICK",
	reqSetVringCall:        "SET_VRING_CALL",
	reqSetVringErr:         "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum:         "GET_QUEUE_NUM",
	reqSetVringEnable:      "SET_VRING_ENABLE",
}

func (r request) String() string {
	if s, ok := requestNames[r]; ok {
		return s
	}
	return fmt.Sprintf("request(%d)", uint32(r))
}

// Header flags.
const (
	flagVersion   = 0x1    // the only protocol version
	flagVersionMk = 0x3    // bits holding the version
	flagReply     = 1 << 2 // a back-end's reply
	flagNeedReply = 1 << 3 // REPLY_ACK: the front-end wants an ack
)

// Virtio and vhost-user feature bits (GET/SET_FEATURES).
const (
	featIndirectDesc     = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC
	featEventIdx         = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
	featProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	featVersion1         = 1 << 32 // VIRTIO_F_VERSION_1

	offeredFeatures = featIndirectDesc | featEventIdx | featProtocolFeatures | featVersion1
)

// Protocol feature bits (GET/SET_PROTOCOL_FEATURES).
const (
	protoMQ       = 1 << 0 // VHOST_USER_PROTOCOL_F_MQ: GET_QUEUE_NUM
	protoReplyAck = 1 << 3 // VHOST_USER_PROTOCOL_F_REPLY_ACK

	offeredProtocolFeatures = protoMQ | protoReplyAck
)

const (
	headerSize = 12
	// maxPayload bounds a message: the largest we accept is a memory
	// table of maxRegions regions (8 + 32*8 bytes).
	maxPayload = 4096
	// maxRegions is VHOST_MEMORY_BASELINE_NREGIONS, the most regions
	// SET_MEM_TABLE carries.
	maxRegions = 8
	// maxFDs is the most descriptors one message may carry.
	maxFDs = maxRegions
	// vringNoFD in a KICK/CALL/ERR payload says no descriptor is passed
	// (polling mode), which this back-end does not support.
	vringNoFD = 1 << 8
)

// message is one vhost-user message as read from the socket.
type message struct {
	req     request
	flags   uint32
	payload []byte
	fds     []int // received descriptors, owned by the message until taken
}

// takeFD removes and returns the message's only descriptor, failing
// unless exactly one was passed.
func (m *message) takeFD() (int, error) {
	if len(m.fds) != 1 {
		return -1, fmt.Errorf("%v: got %d file descriptors, want 1", m.req, len(m.fds))
	}
	fd := m.fds[0]
	m.fds = nil
	return fd, nil
}

// closeFDs closes descriptors no handler took.
func (m *message) closeFDs() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
}

// u64 decodes a payload that is one 64-bit number.
func (m *message) u64() (uint64, error) {
	if len(m.payload) != 8 {
		return 0, fmt.Errorf("%v: payload of %d bytes, want 8", m.req, len(m.payload))
	}
	return binary.LittleEndian.Uint64(m.payload), nil
}

// vringState decodes a struct vhost_vring_state payload.
func (m *message) vringState() (index, num uint32, err error) {
	if len(m.payload) != 8 {
		return 0, 0, fmt.Errorf("%v: payload of %d bytes, want 8", m.req, len(m.payload))
	}
	return binary.LittleEndian.Uint32(m.payload), binary.LittleEndian.Uint32(m.payload[4:]), nil
}

// vringAddr is struct vhost_vring_addr: the ring's parts as front-end
// (VMM) virtual addresses.
type vringAddr struct {
	index             uint32
	flags             uint32
	desc, used, avail uint64
	log               uint64
}

func (m *message) vringAddr() (vringAddr, error) {
	if len(m.payload) != 40 {
		return vringAddr{}, fmt.Errorf("%v: payload of %d bytes, want 40", m.req, len(m.payload))
	}
	p := m.payload
	le := binary.LittleEndian
	return vringAddr{
		index: le.Uint32(p), flags: le.Uint32(p[4:]),
		desc: le.Uint64(p[8:]), used: le.Uint64(p[16:]), avail: le.Uint64(p[24:]), log: le.Uint64(p[32:]),
	}, nil
}

// regionDesc is struct vhost_user_memory_region.
type regionDesc struct {
	guestAddr  uint64 // guest physical address
	size       uint64
	userAddr   uint64 // the front-end's virtual address of the region
	mmapOffset uint64 // where the region starts in its file descriptor
}

// memTable decodes a SET_MEM_TABLE payload.
func (m *message) memTable() ([]regionDesc, error) {
	if len(m.payload) < 8 {
		return nil, fmt.Errorf("%v: payload of %d bytes is too short", m.req, len(m.payload))
	}
	n := binary.LittleEndian.Uint32(m.payload)
	if n == 0 || n > maxRegions {
		return nil, fmt.Errorf("%v: %d regions, want 1 to %d", m.req, n, maxRegions)
	}
	if want := 8 + 32*int(n); len(m.payload) != want {
		return nil, fmt.Errorf("%v: payload of %d bytes for %d regions, want %d", m.req, len(m.payload), n, want)
	}
	regions := make([]regionDesc, n)
	for i := range regions {
		p := m.payload[8+32*i:]
		le := binary.LittleEndian
		regions[i] = regionDesc{guestAddr: le.Uint64(p), size: le.Uint64(p[8:]), userAddr: le.Uint64(p[16:]), mmapOffset: le.Uint64(p[24:])}
	}
	return regions, nil
}

// wire reads and writes messages on one front-end connection.
type wire struct {
	conn *net.UnixConn
	oob  []byte
}

func newWire(conn *net.UnixConn) *wire {
	return &wire{conn: conn, oob: make([]byte, unix.CmsgSpace(maxFDs*4))}
}

// errTooManyFDs is returned when a message carries more descriptors than
// any request needs; they are closed.
var errTooManyFDs = errors.New("too many file descriptors in one message")

// read reads one message. io.EOF means the front-end closed the
// connection between messages.
func (w *wire) read() (*message, error) {
	m := &message{}
	var hdr [headerSize]byte
	if err := w.readFull(hdr[:], m, true); err != nil {
		m.closeFDs()
		return nil, err
	}
	le := binary.LittleEndian
	m.req = request(le.Uint32(hdr[:]))
	m.flags = le.Uint32(hdr[4:])
	size := le.Uint32(hdr[8:])
	if m.flags&flagVersionMk != flagVersion {
		m.closeFDs()
		return nil, fmt.Errorf("%v: unsupported protocol version in flags %#x", m.req, m.flags)
	}
	if size > maxPayload {
		m.closeFDs()
		return nil, fmt.Errorf("%v: payload of %d bytes is over the limit of %d", m.req, size, maxPayload)
	}
	m.payload = make([]byte, size)
	if err := w.readFull(m.payload, m, false); err != nil {
		m.closeFDs()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading the payload of %v: %w", m.req, err)
	}
	return m, nil
}

// readFull fills b, collecting every descriptor that arrives with it into
// m. An EOF before the first byte of a header is io.EOF.
func (w *wire) readFull(b []byte, m *message, header bool) error {
	got := 0
	for got < len(b) {
		n, oobn, flags, _, err := w.conn.ReadMsgUnix(b[got:], w.oob)
		if oobn > 0 {
			if ferr := w.collectFDs(w.oob[:oobn], m); ferr != nil && err == nil {
				err = ferr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 && err == nil {
			err = errTooManyFDs
		}
		got += n
		if err != nil {
			if errors.Is(err, io.EOF) && header && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if n == 0 {
			if header && got == 0 {
				return io.EOF
			}
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

func (w *wire) collectFDs(oob []byte, m *message) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("parsing control message: %w", err)
	}
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		m.fds = append(m.fds, fds...)
	}
	if len(m.fds) > maxFDs {
		return errTooManyFDs
	}
	return nil
}

// reply sends a reply to m with payload.
func (w *wire) reply(m *message, payload []byte) error {
	b := make([]byte, headerSize+len(payload))
	le := binary.LittleEndian
	le.PutUint32(b, uint32(m.req))
	le.PutUint32(b[4:], flagVersion|flagReply)
	le.PutUint32(b[8:], uint32(len(payload)))
	copy(b[headerSize:], payload)
	if _, err := w.conn.Write(b); err != nil {
		return fmt.Errorf("replying to %v: %w", m.req, err)
	}
	return nil
}

// replyU64 sends a reply whose payload is one 64-bit number.
func (w *wire) replyU64(m *message, v uint64) error {
	return w.reply(m, binary.LittleEndian.AppendUint64(nil, v))
}

// replyVringState sends a struct vhost_vring_state reply.
func (w *wire) replyVringState(m *message, index, num uint32) error {
	b := binary.LittleEndian.AppendUint32(nil, index)
	return w.reply(m, binary.LittleEndian.AppendUint32(b, num))
}

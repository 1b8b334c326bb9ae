package nfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ONC RPC (RFC 5531) constants used by the record layer.
const (
	rpcVersion = 2

	msgCall  = 0
	msgReply = 1

	replyAccepted = 0
	replyDenied   = 1

	acceptSuccess      = 0
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
	acceptProcUnavail  = 3
	acceptGarbageArgs  = 4
	acceptSystemErr    = 5

	rejectRPCMismatch = 0
	rejectAuthError   = 1

	authNone  = 0
	authSys   = 1
	authShort = 2

	authBadCred  = 1
	authTooWeak  = 5
	maxAuthBytes = 400 // RFC 5531: opaque_auth bodies are at most 400 bytes
)

// Programs this server knows.
const (
	progNFS   = 100003
	progMount = 100005
	progACL   = 100227 // NFS_ACL: Linux probes it on the NFS port; we have no ACLs
)

// call is one decoded RPC call: the header fields the server needs and the
// undecoded procedure arguments.
type call struct {
	xid     uint32
	rpcvers uint32
	prog    uint32
	vers    uint32
	proc    uint32
	flavor  uint32 // credential flavor
	cred    []byte // credential body
	args    []byte // procedure arguments (aliases the record)
}

// errNotCall means a record is a reply or otherwise not a call; the server
// ignores it (RFC 5531: a server never answers a reply).
var errNotCall = errors.New("nfs: RPC message is not a call")

// parseCall decodes the call header of a record. A record too short to hold
// an xid fails without one; any later malformation returns the call with
// its xid so that the caller can answer GARBAGE_ARGS.
func parseCall(rec []byte) (*call, error) {
	r := xdrReader{b: rec}
	c := &call{}
	c.xid = r.u32()
	mtype := r.u32()
	if r.err != nil {
		return nil, fmt.Errorf("rpc record of %d bytes: %w", len(rec), r.err)
	}
	if mtype != msgCall {
		return c, errNotCall
	}
	c.rpcvers = r.u32()
	c.prog = r.u32()
	c.vers = r.u32()
	c.proc = r.u32()
	c.flavor = r.u32()
	c.cred = r.opaque(maxAuthBytes)
	r.u32() // verifier flavor: we answer every flavor with AUTH_NONE
	r.opaque(maxAuthBytes)
	if r.err != nil {
		return c, fmt.Errorf("rpc call header (xid %#x): %w", c.xid, r.err)
	}
	c.args = r.b
	return c, nil
}

// authSysCred is the AUTH_SYS credential (RFC 5531 appendix A).
type authSysCred struct {
	machine  string
	uid, gid uint32
}

// parseAuthSys decodes an AUTH_SYS credential body.
func parseAuthSys(b []byte) (authSysCred, error) {
	r := xdrReader{b: b}
	r.u32() // stamp
	machine := r.opaque(255)
	uid, gid := r.u32(), r.u32()
	if n := r.u32(); n > 16 {
		r.fail()
	} else {
		for range n {
			r.u32()
		}
	}
	if r.err != nil || len(r.b) != 0 {
		return authSysCred{}, errors.New("malformed AUTH_SYS credential")
	}
	return authSysCred{machine: string(machine), uid: uid, gid: gid}, nil
}

// replyHeader starts an accepted reply with the given accept_stat. The
// record mark is filled in by writeRecord.
func replyHeader(w *xdrWriter, xid uint32, stat uint32) {
	w.u32(0) // record mark placeholder
	w.u32(xid)
	w.u32(msgReply)
	w.u32(replyAccepted)
	w.u32(authNone) // verifier: AUTH_NONE, empty
	w.u32(0)
	w.u32(stat)
}

// acceptedError is a complete accepted reply that is not SUCCESS. For
// PROG_MISMATCH, low and high are the supported versions (mismatch_info).
func acceptedError(xid, stat, low, high uint32) []byte {
	w := xdrWriter{b: make([]byte, 0, 40)}
	replyHeader(&w, xid, stat)
	if stat == acceptProgMismatch {
		w.u32(low)
		w.u32(high)
	}
	return w.b
}

// deniedAuth is a complete MSG_DENIED reply with AUTH_ERROR and auth_stat.
func deniedAuth(xid, stat uint32) []byte {
	w := xdrWriter{b: make([]byte, 0, 24)}
	w.u32(0)
	w.u32(xid)
	w.u32(msgReply)
	w.u32(replyDenied)
	w.u32(rejectAuthError)
	w.u32(stat)
	return w.b
}

// deniedRPCMismatch is a complete MSG_DENIED reply with RPC_MISMATCH: we
// speak RPC version 2 only.
func deniedRPCMismatch(xid uint32) []byte {
	w := xdrWriter{b: make([]byte, 0, 28)}
	w.u32(0)
	w.u32(xid)
	w.u32(msgReply)
	w.u32(replyDenied)
	w.u32(rejectRPCMismatch)
	w.u32(rpcVersion)
	w.u32(rpcVersion)
	return w.b
}

// setRecordMark fills in the 4-byte record mark at the start of a reply
// built by replyHeader: one fragment, the last.
func setRecordMark(b []byte) { setRecordMarkLen(b, len(b)-4) }

// setRecordMarkLen fills in the record mark of a reply of n bytes whose
// first part is b (the rest is sent from a file: see fileTail).
func setRecordMarkLen(b []byte, n int) {
	binary.BigEndian.PutUint32(b, uint32(n)|1<<31)
}

// errRecordTooLarge is returned by readRecord for a record longer than the
// limit; the connection is then dropped.
var errRecordTooLarge = errors.New("nfs: RPC record exceeds the maximum record size")

// readChunk is how much of a record readRecord allocates ahead of the
// bytes that have arrived.
const readChunk = 64 << 10

// readRecord reads one RPC record (RFC 5531 section 11: fragments, the last
// marked by the high bit) of at most max bytes into buf's storage. A
// fragment's declared length is checked against max before anything is
// allocated, and the record grows as its bytes arrive: a client that
// declares a large record and sends nothing costs at most readChunk.
func readRecord(r *bufio.Reader, buf []byte, max int) ([]byte, error) {
	rec := buf[:0]
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(rec) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		mark := binary.BigEndian.Uint32(hdr[:])
		n := int(mark &^ (1 << 31))
		if n > max-len(rec) {
			return nil, fmt.Errorf("%w (%d bytes)", errRecordTooLarge, len(rec)+n)
		}
		for n > 0 {
			chunk := min(n, readChunk)
			start := len(rec)
			rec = slices.Grow(rec, chunk)[:start+chunk]
			if _, err := io.ReadFull(r, rec[start:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			n -= chunk
		}
		if mark&(1<<31) != 0 {
			return rec, nil
		}
	}
}

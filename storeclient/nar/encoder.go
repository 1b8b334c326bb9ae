// Package nar reads and writes Nix archives (NAR), the serialisation whose
// sha256 is a store path's NarHash, and converts castore trees to NARs.
// It also reads compressed NAR files (Decompress, DetectCompression): the
// importer and the binary cache both want the NAR inside such a file, so
// both use the one decoder, with one set of limits and errors.
//
// The framing is written here rather than with go-nix's pkg/nar: the
// importer must feed the NAR byte stream of a tree into one sha256 while
// file contents are hashed and stored elsewhere, node by node, which needs
// an encoder driven by calls (go-nix's Writer takes paths and runs a
// goroutine per archive). The Reader is strict where go-nix's is lenient:
// it rejects duplicate, unsorted, empty, "." and ".." entry names, which
// go-nix's path-based reader silently merges.
//
// Format (all integers little-endian uint64; every string is its length,
// its bytes, and zero padding to a multiple of 8):
//
//	nar       = "nix-archive-1" node
//	node      = "(" "type" ( regular | symlink | directory ) ")"
//	regular   = "regular" [ "executable" "" ] "contents" <bytes>
//	symlink   = "symlink" "target" <target>
//	directory = "directory" { "entry" "(" "name" <name> "node" node ")" }
//
// Directory entries are sorted by the raw bytes of their names.
package nar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Magic is the string a NAR starts with.
const Magic = "nix-archive-1"

// ErrMalformed is wrapped by every error about a NAR that breaks the format.
var ErrMalformed = errors.New("malformed NAR")

// Encoder writes one NAR in canonical form, node by node, in NAR order: the
// root node first; inside a directory, Entry then the entry's node, with
// names strictly ascending; End closes a directory. A file's contents
// follow File through Write. Misuse (a node where none is expected, names
// out of order, more or fewer content bytes than announced) is an error,
// so everything an Encoder writes is a valid NAR.
//
// Errors are sticky: after the first, every call returns it.
type Encoder struct {
	w   io.Writer
	n   uint64
	err error

	started  bool
	wantNode bool // the root or an entry's node is expected next
	done     bool
	dirs     []dirFrame

	fileLeft uint64 // content bytes still to come for the current file
	fileSize uint64
	inFile   bool

	buf []byte
}

type dirFrame struct {
	last    string
	hasLast bool
}

// NewEncoder returns an Encoder writing to w. Nothing is written before the
// first node.
func NewEncoder(w io.Writer) *Encoder {
	return &Encoder{w: w, wantNode: true, buf: make([]byte, 0, 512)}
}

// Size returns the number of NAR bytes written so far.
func (e *Encoder) Size() uint64 { return e.n }

// Err returns the first error, if any.
func (e *Encoder) Err() error { return e.err }

func (e *Encoder) fail(format string, args ...any) error {
	if e.err == nil {
		e.err = fmt.Errorf("nar encoder: "+format, args...)
	}
	return e.err
}

// appendString appends one NAR string: length, bytes, zero padding.
func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, padding(uint64(len(s))))...)
}

func padding(n uint64) int { return int((8 - n%8) % 8) }

func (e *Encoder) flush() error {
	if e.err != nil {
		return e.err
	}
	if len(e.buf) == 0 {
		return nil
	}
	n, err := e.w.Write(e.buf)
	e.n += uint64(n)
	e.buf = e.buf[:0]
	if err != nil {
		e.err = fmt.Errorf("write NAR: %w", err)
	}
	return e.err
}

func (e *Encoder) beginNode(kind string) error {
	if e.err != nil {
		return e.err
	}
	if !e.wantNode {
		return e.fail("%s node where none is expected", kind)
	}
	e.wantNode = false
	if !e.started {
		e.started = true
		e.buf = appendString(e.buf, Magic)
	}
	e.buf = appendString(e.buf, "(")
	e.buf = appendString(e.buf, "type")
	e.buf = appendString(e.buf, kind)
	return nil
}

// endNode closes a node and, inside a directory, the entry that holds it.
func (e *Encoder) endNode() error {
	e.buf = appendString(e.buf, ")")
	if len(e.dirs) > 0 {
		e.buf = appendString(e.buf, ")")
	} else {
		e.done = true
	}
	return e.flush()
}

// Symlink writes a symlink node.
func (e *Encoder) Symlink(target string) error {
	if len(target) == 0 {
		return e.fail("empty symlink target")
	}
	if err := e.beginNode("symlink"); err != nil {
		return err
	}
	e.buf = appendString(e.buf, "target")
	e.buf = appendString(e.buf, target)
	return e.endNode()
}

// File starts a regular file node of size bytes; exactly size bytes of
// contents must follow through Write (none for an empty file).
func (e *Encoder) File(size uint64, executable bool) error {
	if err := e.beginNode("regular"); err != nil {
		return err
	}
	if executable {
		e.buf = appendString(e.buf, "executable")
		e.buf = appendString(e.buf, "")
	}
	e.buf = appendString(e.buf, "contents")
	e.buf = binary.LittleEndian.AppendUint64(e.buf, size)
	e.inFile, e.fileSize, e.fileLeft = true, size, size
	if size == 0 {
		return e.endFile()
	}
	return e.flush()
}

func (e *Encoder) endFile() error {
	e.inFile = false
	e.buf = append(e.buf, make([]byte, padding(e.fileSize))...)
	return e.endNode()
}

// Write writes contents of the current file.
func (e *Encoder) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if !e.inFile {
		return 0, e.fail("file contents outside a file")
	}
	if uint64(len(p)) > e.fileLeft {
		return 0, e.fail("%d bytes of contents for a file with %d left", len(p), e.fileLeft)
	}
	n, err := e.w.Write(p)
	e.n += uint64(n)
	e.fileLeft -= uint64(n)
	if err != nil {
		e.err = fmt.Errorf("write NAR: %w", err)
		return n, e.err
	}
	if e.fileLeft == 0 {
		return n, e.endFile()
	}
	return n, nil
}

// Directory starts a directory node. Its entries follow, then End.
func (e *Encoder) Directory() error {
	if err := e.beginNode("directory"); err != nil {
		return err
	}
	e.dirs = append(e.dirs, dirFrame{})
	return nil
}

// Entry starts an entry of the current directory; its node must follow.
// name must sort after the previous entry's name.
func (e *Encoder) Entry(name string) error {
	if e.err != nil {
		return e.err
	}
	if e.wantNode || e.inFile || len(e.dirs) == 0 {
		return e.fail("entry %s outside a directory", strconv.Quote(name))
	}
	if err := CheckName(name); err != nil {
		return e.fail("%w", err)
	}
	top := &e.dirs[len(e.dirs)-1]
	if top.hasLast && name <= top.last {
		return e.fail("entry %s does not sort after %s", strconv.Quote(name), strconv.Quote(top.last))
	}
	top.last, top.hasLast = name, true
	e.buf = appendString(e.buf, "entry")
	e.buf = appendString(e.buf, "(")
	e.buf = appendString(e.buf, "name")
	e.buf = appendString(e.buf, name)
	e.buf = appendString(e.buf, "node")
	e.wantNode = true
	return nil
}

// End closes the current directory.
func (e *Encoder) End() error {
	if e.err != nil {
		return e.err
	}
	if e.wantNode || e.inFile || len(e.dirs) == 0 {
		return e.fail("end of a directory where none is open")
	}
	e.dirs = e.dirs[:len(e.dirs)-1]
	return e.endNode()
}

// Close checks that the NAR is complete. It does not close the underlying
// writer.
func (e *Encoder) Close() error {
	if e.err != nil {
		return e.err
	}
	if !e.done {
		return e.fail("NAR is incomplete")
	}
	return nil
}

// CheckName reports whether name may name a NAR directory entry: not
// empty, not "." or "..", without "/" or NUL.
func CheckName(name string) error {
	switch name {
	case "", ".", "..":
		return fmt.Errorf("%w: entry name %s is not allowed", ErrMalformed, strconv.Quote(name))
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("%w: entry name %s contains %q", ErrMalformed, strconv.Quote(name), name[i])
		}
	}
	return nil
}

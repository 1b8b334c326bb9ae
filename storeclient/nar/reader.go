package nar

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// Limits the Reader enforces on tokens it holds in memory.
const (
	// MaxNameLen is the longest entry name a Reader accepts (NAME_MAX).
	MaxNameLen = 255
	// MaxTargetLen is the longest symlink target a Reader accepts
	// (PATH_MAX without its NUL).
	MaxTargetLen = 4095
	maxTokenLen  = 16
)

// Type is the kind of a Header.
type Type uint8

// The header types. TypeEndDirectory marks the end of a directory's
// entries; it carries no name.
const (
	TypeRegular Type = iota + 1
	TypeSymlink
	TypeDirectory
	TypeEndDirectory
)

func (t Type) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeSymlink:
		return "symlink"
	case TypeDirectory:
		return "directory"
	case TypeEndDirectory:
		return "end of directory"
	}
	return "invalid"
}

// Header is one event of a NAR, in NAR order.
type Header struct {
	Type Type
	// Name is the entry name in the parent directory; "" for the root
	// node and for TypeEndDirectory.
	Name string
	// Depth is 0 for the root node, 1 for its entries, and so on. A
	// TypeEndDirectory has the depth of the directory it ends.
	Depth int
	// Size is a regular file's content length.
	Size uint64
	// Executable is set for executable regular files.
	Executable bool
	// Target is a symlink's target.
	Target string
}

// Reader decodes a NAR strictly: every token must be exactly what the
// format requires, padding must be zero, entry names must be valid and
// strictly ascending, and nothing may follow the root node. It does not
// start goroutines. Read returns the contents of the current regular file.
type Reader struct {
	r   *bufio.Reader
	err error

	started bool
	dirs    []dirFrame // open directories, innermost last
	left    uint64     // unread content bytes of the current file
	padLeft int        // padding after the current file's contents
	inFile  bool
	done    bool

	buf [8]byte
	tok []byte
}

// NewReader returns a Reader of the NAR in r. It reads r through a
// bufio.Reader of its own unless r is one, so r may be read past the NAR's
// end only when it has trailing data, which is an error.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{r: br, tok: make([]byte, 0, 64)}
}

func (r *Reader) malformed(format string, args ...any) error {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	return r.err
}

// ioErr records an error of the underlying reader; a premature EOF is a
// truncated NAR. Only a bare io.EOF or io.ErrUnexpectedEOF (the end of r,
// as io.ReadFull reports it) is: a wrapped one is a failure of the source
// (a download cut short), reported as it is.
func (r *Reader) ioErr(err error, what string) error {
	if r.err == nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			r.err = fmt.Errorf("%w: truncated while reading %s", ErrMalformed, what)
		} else {
			r.err = fmt.Errorf("read NAR %s: %w", what, err)
		}
	}
	return r.err
}

func (r *Reader) readUint64(what string) (uint64, error) {
	if _, err := io.ReadFull(r.r, r.buf[:]); err != nil {
		return 0, r.ioErr(err, what)
	}
	return binary.LittleEndian.Uint64(r.buf[:]), nil
}

func (r *Reader) readPadding(n uint64, what string) error {
	p := padding(n)
	if p == 0 {
		return nil
	}
	if _, err := io.ReadFull(r.r, r.buf[:p]); err != nil {
		return r.ioErr(err, what)
	}
	for _, b := range r.buf[:p] {
		if b != 0 {
			return r.malformed("non-zero padding after %s", what)
		}
	}
	return nil
}

// readString reads one string of at most max bytes. The result aliases
// r.tok until the next call.
func (r *Reader) readString(max int, what string) ([]byte, error) {
	n, err := r.readUint64(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, r.malformed("%s of %d bytes is longer than %d", what, n, max)
	}
	if uint64(cap(r.tok)) < n {
		r.tok = make([]byte, n)
	}
	r.tok = r.tok[:n]
	if _, err := io.ReadFull(r.r, r.tok); err != nil {
		return nil, r.ioErr(err, what)
	}
	if err := r.readPadding(n, what); err != nil {
		return nil, err
	}
	return r.tok, nil
}

func (r *Reader) expect(want string) error {
	got, err := r.readString(maxTokenLen, strconv.Quote(want))
	if err != nil {
		return err
	}
	if string(got) != want {
		return r.malformed("got %s, want %s", strconv.Quote(string(got)), strconv.Quote(want))
	}
	return nil
}

// Next advances to the next header. It skips the unread contents of the
// current file. At the end of the NAR it returns io.EOF, after checking
// that nothing follows it.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.inFile {
		if err := r.finishFile(); err != nil {
			return nil, err
		}
	}
	if !r.started {
		r.started = true
		if err := r.expect(Magic); err != nil {
			return nil, err
		}
		return r.node("", 0)
	}
	if r.done {
		if _, err := r.r.ReadByte(); err == nil {
			return nil, r.malformed("trailing data after the root node")
		} else if err != io.EOF {
			return nil, r.ioErr(err, "end")
		}
		r.err = io.EOF
		return nil, io.EOF
	}
	// Inside a directory: an entry or its end.
	tok, err := r.readString(maxTokenLen, `"entry" or ")"`)
	if err != nil {
		return nil, err
	}
	depth := len(r.dirs)
	top := &r.dirs[depth-1]
	switch string(tok) {
	case ")":
		r.dirs = r.dirs[:depth-1]
		if err := r.endNode(); err != nil {
			return nil, err
		}
		return &Header{Type: TypeEndDirectory, Depth: depth - 1}, nil
	case "entry":
	default:
		return nil, r.malformed("got %s in a directory, want \"entry\" or \")\"", strconv.Quote(string(tok)))
	}
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("name"); err != nil {
		return nil, err
	}
	b, err := r.readString(MaxNameLen, "entry name")
	if err != nil {
		return nil, err
	}
	name := string(b)
	if err := CheckName(name); err != nil {
		r.err = err
		return nil, err
	}
	if top.hasLast && name <= top.last {
		return nil, r.malformed("entry %s does not sort after %s", strconv.Quote(name), strconv.Quote(top.last))
	}
	top.last, top.hasLast = name, true
	if err := r.expect("node"); err != nil {
		return nil, err
	}
	return r.node(name, depth)
}

// node reads a node's header up to its contents.
func (r *Reader) node(name string, depth int) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	tok, err := r.readString(maxTokenLen, "node type")
	if err != nil {
		return nil, err
	}
	h := &Header{Name: name, Depth: depth}
	switch string(tok) {
	case "regular":
		h.Type = TypeRegular
		tok, err := r.readString(maxTokenLen, `"executable" or "contents"`)
		if err != nil {
			return nil, err
		}
		if string(tok) == "executable" {
			h.Executable = true
			if _, err := r.readString(0, "executable marker"); err != nil {
				return nil, err
			}
			if err := r.expect("contents"); err != nil {
				return nil, err
			}
		} else if string(tok) != "contents" {
			return nil, r.malformed("got %s, want \"executable\" or \"contents\"", strconv.Quote(string(tok)))
		}
		size, err := r.readUint64("file size")
		if err != nil {
			return nil, err
		}
		h.Size = size
		r.inFile, r.left, r.padLeft = true, size, padding(size)
		return h, nil
	case "symlink":
		h.Type = TypeSymlink
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		t, err := r.readString(MaxTargetLen, "symlink target")
		if err != nil {
			return nil, err
		}
		if len(t) == 0 {
			return nil, r.malformed("empty symlink target")
		}
		for _, c := range t {
			if c == 0 {
				return nil, r.malformed("symlink target contains NUL")
			}
		}
		h.Target = string(t)
		if err := r.expect(")"); err != nil {
			return nil, err
		}
		if err := r.endNode(); err != nil {
			return nil, err
		}
		return h, nil
	case "directory":
		h.Type = TypeDirectory
		r.dirs = append(r.dirs, dirFrame{})
		return h, nil
	}
	return nil, r.malformed("unknown node type %s", strconv.Quote(string(tok)))
}

// endNode consumes what follows a node's closing ")": the ")" of the entry
// that holds it, or nothing for the root.
func (r *Reader) endNode() error {
	if len(r.dirs) == 0 {
		r.done = true
		return nil
	}
	return r.expect(")")
}

func (r *Reader) finishFile() error {
	if r.left > 0 {
		n, err := io.CopyN(io.Discard, r.r, int64(r.left))
		r.left -= uint64(n)
		if err != nil {
			return r.ioErr(err, "file contents")
		}
	}
	r.inFile = false
	if p := r.padLeft; p > 0 {
		if _, err := io.ReadFull(r.r, r.buf[:p]); err != nil {
			return r.ioErr(err, "file padding")
		}
		for _, b := range r.buf[:p] {
			if b != 0 {
				return r.malformed("non-zero padding after file contents")
			}
		}
	}
	if err := r.expect(")"); err != nil {
		return err
	}
	return r.endNode()
}

// Read reads the contents of the current regular file; it returns io.EOF at
// their end, and at once for other nodes.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil && r.err != io.EOF {
		return 0, r.err
	}
	if !r.inFile || r.left == 0 {
		return 0, io.EOF
	}
	if uint64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= uint64(n)
	if err != nil {
		if err == io.EOF && r.left > 0 {
			return n, r.ioErr(io.ErrUnexpectedEOF, "file contents")
		}
		if err != io.EOF {
			return n, r.ioErr(err, "file contents")
		}
	}
	return n, nil
}

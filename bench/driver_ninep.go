package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/storefs/storefs/protocols/ninep"
	"github.com/storefs/storefs/storeclient/storeurl"
	"github.com/storefs/storefs/vfs"
)

// ninepServer is a running 9P2000.L server and the attach name and path
// prefix that reach the corpus tree on it.
type ninepServer struct {
	name   string
	addr   string
	aname  string
	prefix string // path of the tree below aname ("" or "<hash>-tree/")
	stop   func()
}

// startStorefs9P serves the local store in storeDir with protocols/ninep
// (in this process) on a free loopback port; the corpus is store path
// storePath.
func startStorefs9P(ctx context.Context, env *Env, storeDir, storePath string) (*ninepServer, error) {
	s, err := storeurl.Open(ctx, "local:"+storeDir, storeurl.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	fsys, err := vfs.New(s, vfs.Options{Logger: env.Log})
	if err != nil {
		s.Close()
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, err
	}
	srv := ninep.New(fsys, ninep.Options{Logger: env.Log})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	return &ninepServer{
		name:   "storefs (protocols/ninep)",
		addr:   lis.Addr().String(),
		aname:  "/",
		prefix: filepath.Base(storePath) + "/",
		stop:   func() { srv.Close(); <-done; s.Close() },
	}, nil
}

// startDiod exports tree with diod 1.0.24 as the lab ran it: foreground,
// no auth, loopback, no config file.
func startDiod(ctx context.Context, env *Env, tree string) (*ninepServer, error) {
	bin, err := exec.LookPath("diod")
	if err != nil {
		return nil, errSkip("diod is not installed")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-f", "-n", "-l", addr, "-e", tree, "-L", "stderr", "-c", os.DevNull)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start diod: %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	if !waitPort(port, 10*time.Second) {
		stop()
		return nil, fmt.Errorf("diod did not listen on %s: %s", addr, lastLines(out.Bytes(), 5))
	}
	return &ninepServer{name: "diod 1.0.24", addr: addr, aname: tree, stop: stop}, nil
}

// diodcat runs `diodcat -m msize -s addr -a aname path > /dev/null` and
// returns the bytes it wrote.
func diodcat(ctx context.Context, s *ninepServer, msize int, path string) (int64, error) {
	cmd := exec.CommandContext(ctx, "diodcat", "-m", fmt.Sprint(msize), "-s", s.addr, "-a", s.aname, s.prefix+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, copyErr := io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return n, fmt.Errorf("diodcat %s from %s: %w: %s", path, s.name, err, stderr.String())
	}
	return n, copyErr
}

// p9Session is the Go p9 client (github.com/hugelgupf/p9) attached to a
// server, with the interoperability fixes the lab found it needs: plain
// "9P2000.L" in Tversion, a real n_uname in Tattach, and an msize clamped
// to what the server grants (the library ignores Rversion's msize).
type p9Session struct {
	c     *p9.Client
	root  p9.File
	msize uint32
}

func dialP9(s *ninepServer, msize uint32) (*p9Session, error) {
	granted, err := probeMsize(s.addr, msize)
	if err != nil {
		return nil, fmt.Errorf("9P version probe of %s: %w", s.name, err)
	}
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	c, err := p9.NewClient(&p9InteropConn{Conn: conn}, p9.WithMessageSize(granted))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("p9 client to %s: %w", s.name, err)
	}
	root, err := c.Attach(s.aname)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("attach %q on %s: %w", s.aname, s.name, err)
	}
	return &p9Session{c: c, root: root, msize: granted}, nil
}

func (p *p9Session) close() { p.root.Close(); p.c.Close() }

// probeMsize asks the server for msize with a plain Tversion and returns
// what it grants.
func probeMsize(addr string, msize uint32) (uint32, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	const v = "9P2000.L"
	m := binary.LittleEndian.AppendUint32(nil, uint32(7+4+2+len(v)))
	m = append(m, 100, 0xff, 0xff)
	m = binary.LittleEndian.AppendUint32(m, msize)
	m = binary.LittleEndian.AppendUint16(m, uint16(len(v)))
	m = append(m, v...)
	if _, err := c.Write(m); err != nil {
		return 0, err
	}
	var r [11]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		return 0, err
	}
	if r[4] != 101 {
		return 0, fmt.Errorf("reply type %d to Tversion", r[4])
	}
	return binary.LittleEndian.Uint32(r[7:]), nil
}

// p9InteropConn rewrites the p9 client's Tversion to plain "9P2000.L" and
// its Tattach n_uname (NoUID) to 0. The client writes each message in
// pieces; they are reassembled first.
type p9InteropConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte
}

func (c *p9InteropConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, p...)
	for len(c.pending) >= 7 {
		size := int(binary.LittleEndian.Uint32(c.pending))
		if size < 7 || len(c.pending) < size {
			break
		}
		m := c.pending[:size]
		switch m[4] {
		case 100: // Tversion: size type tag msize[4] version[s]
			const v = "9P2000.L"
			out := binary.LittleEndian.AppendUint32(nil, uint32(7+4+2+len(v)))
			out = append(out, m[4:11]...)
			out = binary.LittleEndian.AppendUint16(out, uint16(len(v)))
			m = append(out, v...)
		case 104: // Tattach: ... n_uname[4] last
			m = append([]byte(nil), m...)
			binary.LittleEndian.PutUint32(m[len(m)-4:], 0)
		}
		if _, err := c.Conn.Write(m); err != nil {
			return 0, err
		}
		c.pending = c.pending[size:]
	}
	return len(p), nil
}

// p9Cat reads path with Tread of msize-sized chunks and returns its length.
func p9Cat(s *ninepServer, msize uint32, path string) (int64, error) {
	p, err := dialP9(s, msize)
	if err != nil {
		return 0, err
	}
	defer p.close()
	_, f, err := p.root.Walk(splitPath(s.prefix + path))
	if err != nil {
		return 0, fmt.Errorf("walk %s on %s: %w", path, s.name, err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return 0, err
	}
	buf := make([]byte, p.msize-4096)
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		off += int64(n)
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return off, nil
		}
		if err != nil {
			return off, fmt.Errorf("read %s on %s at %d: %w", path, s.name, off, err)
		}
	}
}

// p9Walk lists the tree below path depth first, as `find` on a mount
// does: per directory Twalk, Tlopen and Treaddir (count msize-24, as
// Linux), then for every entry Twalk, Tgetattr and Tclunk. It stops after
// limit entries and returns how many it visited.
func p9Walk(s *ninepServer, msize uint32, path string, limit int) (int, error) {
	p, err := dialP9(s, msize)
	if err != nil {
		return 0, err
	}
	defer p.close()
	_, dir, err := p.root.Walk(splitPath(s.prefix + path))
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	count := 0
	var walk func(d p9.File) error
	walk = func(d p9.File) error {
		_, od, err := d.Walk(nil)
		if err != nil {
			return err
		}
		if _, _, err := od.Open(p9.ReadOnly); err != nil {
			od.Close()
			return err
		}
		var names []string
		var off uint64
		for {
			es, err := od.Readdir(off, p.msize-24)
			if err != nil && !errors.Is(err, io.EOF) {
				od.Close()
				return err
			}
			if len(es) == 0 {
				break
			}
			for _, e := range es {
				off = e.Offset
				if e.Name != "." && e.Name != ".." {
					names = append(names, e.Name)
				}
			}
		}
		od.Close()
		for _, name := range names {
			if count >= limit {
				return nil
			}
			_, ch, err := d.Walk([]string{name})
			if err != nil {
				return fmt.Errorf("walk %s: %w", name, err)
			}
			_, _, attr, err := ch.GetAttr(p9.AttrMaskAll)
			if err != nil {
				ch.Close()
				return err
			}
			count++
			if attr.Mode.IsDir() {
				err = walk(ch)
			}
			ch.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	err = walk(dir)
	return count, err
}

// splitPath splits a slash-separated path into the names of a Twalk.
func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

package hostile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/storefs/storefs/e2e/e2etest"
)

// maxAnswer is how long any hostile request may take to be answered or to
// have its connection closed.
const maxAnswer = 3 * time.Second

// maxPeakRSS bounds the daemon's peak resident memory over a whole test, in
// KiB.
const maxPeakRSS = 256 << 10

// silentConns is how many silent connections are held on each port while
// real clients must still be served.
const silentConns = 300

// handshake is the handshake timeout the tests configure (the default is
// 5 s): silent connections must be closed after it.
const handshake = 2 * time.Second

func baseConfig() map[string]string {
	return map[string]string{"timeouts": "  handshake: " + handshake.String() + "\n"}
}

// answered sends raw on a new connection to addr and reports how the
// server answered within maxAnswer: "reply", "closed", or, if nothing came
// back, "ignored" when a NULL call sent then is still answered (the server
// dropped what it could not take as a call); nothing at all fails the test.
func answered(t *testing.T, addr string, raw []byte) (string, time.Duration) {
	t.Helper()
	c, err := dialRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	c.SetDeadline(t0.Add(maxAnswer))
	if _, err := c.Write(raw); err != nil {
		return "closed", time.Since(t0)
	}
	rec, err := c.readRecord()
	var ne net.Error
	switch {
	case err == nil:
		if _, err := acceptedBody(rec); err != nil {
			return "reply (" + err.Error() + ")", time.Since(t0)
		}
		return "reply", time.Since(t0)
	case errors.Is(err, errClosed):
		return "closed", time.Since(t0)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Fatalf("reading the answer: %v", err)
	}
	if _, err := c.call(progNFS, 3, 0, nil, maxAnswer); err != nil {
		t.Fatalf("no answer within %s, and a NULL call then: %v", maxAnswer, err)
	}
	return "ignored", time.Since(t0)
}

// TestHostileNFS sends the NFS cases of the hardening review to a running
// daemon.
func TestHostileNFS(t *testing.T) {
	s := newStore(t)
	d := startDaemon(t, s, baseConfig())
	addr := d.addrs["nfs"]
	c, err := dialRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	root, err := c.mountRoot()
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(dir []byte, name string) []byte {
		t.Helper()
		body, err := c.call(progNFS, 3, 3, xdr(nil).opaque(dir).opaque([]byte(name)), 5*time.Second)
		if err != nil || status(body) != nfs3OK {
			t.Fatalf("LOOKUP %s: %x, %v", name, body, err)
		}
		n := binary.BigEndian.Uint32(body[4:])
		return bytes.Clone(body[8 : 8+n])
	}
	top := lookup(root, s.basename)
	sub := lookup(top, "sub")

	t.Run("readdir with a tiny maxcount past the end", func(t *testing.T) {
		cpu0 := d.cpu()
		var slowest time.Duration
		for _, dir := range [][]byte{root, top, sub} {
			for _, cookie := range []uint64{0, 3, 1 << 40, ^uint64(0)} {
				for _, maxcount := range []uint32{0, 1, 16, 84, 85, 120} {
					for _, proc := range []uint32{procReaddir, procReaddirplus} {
						args := xdr(nil).opaque(dir).u64(cookie).u64(0)
						if proc == procReaddirplus {
							args = args.u32(maxcount)
						}
						args = args.u32(maxcount)
						how, took := answered(t, addr, callRecord(7, progNFS, 3, proc, args))
						if how != "reply" && !strings.HasPrefix(how, "reply (") {
							t.Errorf("proc %d cookie %d maxcount %d: connection %s, want a reply", proc, cookie, maxcount, how)
						}
						slowest = max(slowest, took)
					}
				}
			}
		}
		t.Logf("144 READDIR/READDIRPLUS calls: slowest reply %s, daemon CPU %s", slowest, d.cpu()-cpu0)
	})

	t.Run("MNT claiming a 0xF0000000-byte dirpath", func(t *testing.T) {
		rss0 := d.status("VmRSS")
		// Some path bytes follow the claimed length: go-nfs, which served
		// MNT before, then tried to read and log all 0xF0000000 of them.
		raw := callRecord(9, progMount, 3, procMnt, append(xdr(nil).u32(0xF0000000), "/abc"...))
		how, took := answered(t, addr, raw)
		time.Sleep(time.Second) // anything still growing shows now
		grew := d.status("VmRSS") - rss0
		t.Logf("%d-byte MNT: %s after %s; RSS grew %d KiB", len(raw), how, took, grew)
		if grew > 64<<10 {
			t.Errorf("RSS grew by %d KiB", grew)
		}
	})

	t.Run("forged handle", func(t *testing.T) {
		forged := bytes.Clone(sub)
		forged[len(forged)-1] ^= 0x10 // a bit of the recorded size
		body, err := c.call(progNFS, 3, procGetattr, xdr(nil).opaque(forged), 5*time.Second)
		if err != nil || status(body) != nfs3Stale {
			t.Errorf("GETATTR of a forged handle: %x, %v; want NFS3ERR_STALE", body, err)
		}
		if strings.Contains(d.stderr.String(), "level=ERROR") {
			t.Errorf("the daemon logged an error for a forged handle:\n%s", d.stderr)
		}
	})

	t.Run("garbage records", func(t *testing.T) {
		for name, raw := range map[string][]byte{
			"declared 2 GiB record":   xdr(nil).u32(0xffffffff),
			"record not a call":       append(xdr(nil).u32(0x80000008), xdr(nil).u32(1).u32(1)...),
			"credential of 1 MiB":     append(xdr(nil).u32(0x80000000|40), xdr(nil).u32(1).u32(0).u32(2).u32(progNFS).u32(3).u32(1).u32(1).u32(1<<20).u32(0).u32(0)...),
			"many fragments":          bytes.Repeat(xdr(nil).u32(4).u32(0), 1000),
			"unknown program":         callRecord(1, 100227, 3, 0, nil),
			"READ of 4 GiB":           callRecord(1, progNFS, 3, 6, xdr(nil).opaque(sub).u64(0).u32(0xffffffff)),
			"LOOKUP of a 1 MiB name":  callRecord(1, progNFS, 3, 3, xdr(nil).opaque(top).u32(1<<20)),
			"handle longer than 64 B": callRecord(1, progNFS, 3, procGetattr, xdr(nil).opaque(make([]byte, 200))),
		} {
			how, took := answered(t, addr, raw)
			t.Logf("%s: %s after %s", name, how, took)
		}
	})

	t.Run("silent connections", func(t *testing.T) {
		held := holdSilent(t, addr, silentConns)
		checkLibnfs(t, s, addr)
		checkClosed(t, held, "nfs")
		if v := d.metric(`storefs_connections_closed_total{protocol="nfs",reason="handshake"}`); v == "" || v == "0" {
			t.Errorf("storefs_connections_closed_total for handshake timeouts = %q, want > 0", v)
		}
	})

	d.alive()
	t.Logf("daemon peak RSS %d MiB", d.status("VmHWM")>>10)
	if peak := d.status("VmHWM"); peak > maxPeakRSS {
		t.Errorf("daemon peak RSS %d MiB, want at most %d MiB", peak>>10, maxPeakRSS>>10)
	}
	d.stop()
}

// TestHostile9P sends hostile 9P input to a running daemon.
func TestHostile9P(t *testing.T) {
	s := newStore(t)
	d := startDaemon(t, s, baseConfig())
	addr := d.addrs["ninep"]
	le := func(vals ...any) []byte {
		var b []byte
		for _, v := range vals {
			switch v := v.(type) {
			case uint8:
				b = append(b, v)
			case uint16:
				b = binary.LittleEndian.AppendUint16(b, v)
			case uint32:
				b = binary.LittleEndian.AppendUint32(b, v)
			case string:
				b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
				b = append(b, v...)
			}
		}
		return b
	}
	msg := func(typ uint8, tag uint16, body []byte) []byte {
		return append(le(uint32(7+len(body)), typ, tag), body...)
	}
	version := msg(100, 0xffff, le(uint32(8192), "9P2000.L"))
	for name, raw := range map[string][]byte{
		"size 0xffffffff":          le(uint32(0xffffffff), uint8(100), uint16(0)),
		"size below the header":    le(uint32(3), uint8(100), uint16(0)),
		"Tattach before Tversion":  msg(104, 1, le(uint32(1), uint32(0xffffffff), "", "", uint32(0))),
		"Tversion of msize 0":      msg(100, 0xffff, le(uint32(0), "9P2000.L")),
		"Tversion, then 2 GiB msg": append(bytes.Clone(version), le(uint32(0x80000000), uint8(110), uint16(1))...),
		"Twalk of 1000 names": append(bytes.Clone(version), msg(110, 1, append(le(uint32(1), uint32(2), uint16(1000)),
			bytes.Repeat(le("x"), 1000)...))...),
	} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(maxAnswer))
		t0 := time.Now()
		c.Write(raw)
		var buf [64 << 10]byte
		var err2 error
		for err2 == nil { // read until the server closes or goes quiet
			c.SetReadDeadline(time.Now().Add(maxAnswer))
			_, err2 = c.Read(buf[:])
		}
		var ne net.Error
		if errors.As(err2, &ne) && ne.Timeout() && strings.HasPrefix(name, "size") {
			t.Errorf("%s: connection still open after %s", name, maxAnswer)
		}
		t.Logf("%s: %v after %s", name, err2, time.Since(t0).Round(time.Millisecond))
		c.Close()
	}

	held := holdSilent(t, addr, silentConns)
	checkDiod(t, s, addr)
	checkClosed(t, held, "ninep")

	d.alive()
	t.Logf("daemon peak RSS %d MiB", d.status("VmHWM")>>10)
	if peak := d.status("VmHWM"); peak > maxPeakRSS {
		t.Errorf("daemon peak RSS %d MiB, want at most %d MiB", peak>>10, maxPeakRSS>>10)
	}
	d.stop()
}

// holdSilent opens n connections to addr that send nothing.
func holdSilent(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", len(held)+1, err)
		}
		held = append(held, c)
	}
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	return held
}

// checkClosed waits past the handshake timeout and checks that the server
// closed every silent connection.
func checkClosed(t *testing.T, held []net.Conn, proto string) {
	t.Helper()
	deadline := time.Now().Add(handshake + 5*time.Second)
	open := 0
	buf := make([]byte, 4096)
	for _, c := range held {
		c.SetReadDeadline(deadline)
		var err error
		for err == nil { // gRPC's server speaks first (HTTP/2 settings)
			_, err = c.Read(buf)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			open++
		}
	}
	if open > 0 {
		t.Errorf("%s: %d of %d silent connections still open %s after the handshake timeout", proto, open, len(held), 5*time.Second)
	}
}

// checkLibnfs lists and reads the tree with libnfs's tools.
func checkLibnfs(t *testing.T, s *store, addr string) {
	t.Helper()
	nfsls := e2etest.NeedCommand(t, "nfs-ls")
	nfscat := e2etest.NeedCommand(t, "nfs-cat")
	_, port, _ := net.SplitHostPort(addr)
	query := "?version=3&nfsport=" + port + "&mountport=" + port
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nfsls, "nfs://127.0.0.1/"+s.basename+query).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sub") {
		t.Errorf("nfs-ls while connections are held: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, nfscat, "nfs://127.0.0.1/"+s.basename+"/sub/data.bin"+query).Output()
	if err != nil || !bytes.Equal(out, s.data) {
		t.Errorf("nfs-cat while connections are held: %v, %d bytes (want %d)", err, len(out), len(s.data))
	}
}

// checkDiod lists and reads the tree with diod's tools.
func checkDiod(t *testing.T, s *store, addr string) {
	t.Helper()
	diodls := e2etest.NeedCommand(t, "diodls")
	diodcat := e2etest.NeedCommand(t, "diodcat")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, diodls, "-s", addr, "-a", s.basename).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sub") {
		t.Errorf("diodls while connections are held: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, diodcat, "-s", addr, "-a", s.basename, "sub/data.bin").Output()
	if err != nil || !bytes.Equal(out, s.data) {
		t.Errorf("diodcat while connections are held: %v, %d bytes (want %d)", err, len(out), len(s.data))
	}
}

// TestHostileGRPCAndMetrics holds silent connections on the gRPC and
// metrics ports while a gRPC client (storefs itself) and an HTTP client are
// served.
func TestHostileGRPCAndMetrics(t *testing.T) {
	s := newStore(t)
	cfg := baseConfig()
	cfg["grpc"] = "  listen: 127.0.0.1:0\n"
	d := startDaemon(t, s, cfg)
	heldGRPC := holdSilent(t, d.addrs["grpc"], silentConns)
	heldMetrics := holdSilent(t, d.addrs["metrics"], silentConns)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, storefsBin, "--store", "grpc+http://"+d.addrs["grpc"], "cat", s.basename+"/sub/data.bin").Output()
	if err != nil || !bytes.Equal(out, s.data) {
		t.Errorf("storefs cat over gRPC while connections are held: %v, %d bytes (want %d)", err, len(out), len(s.data))
	}
	if v := d.metric(`storefs_connections_closed_total{protocol="metrics",reason="evicted"}`); v == "" || v == "0" {
		t.Errorf("metrics evictions = %q, want > 0 (%d silent connections, cap 16)", v, silentConns)
	}
	checkClosed(t, heldGRPC, "grpc")
	checkClosed(t, heldMetrics, "metrics")
	d.alive()
	d.stop()
}

// flipInStore flips one bit of the first copy of data's bytes found in the
// store's pack and blob files, as bit rot on the disk would.
func flipInStore(t *testing.T, s *store, data []byte) string {
	t.Helper()
	needle := data[1000:1064]
	var found string
	filepath.WalkDir(s.dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || found != "" || filepath.Base(p) == "meta.db" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, needle); i >= 0 {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				os.Chmod(p, 0o644)
				f, err = os.OpenFile(p, os.O_WRONLY, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{b[i] ^ 0x01}, int64(i)); err != nil {
				t.Fatal(err)
			}
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatal("the file's bytes are in no file of the store")
	}
	return found
}

// TestHostileStore damages the store under a running daemon: bit rot in a
// blob, and a damaged meta.db. Neither is served or crashes the daemon.
func TestHostileStore(t *testing.T) {
	t.Run("bit rot found by the scrubber", func(t *testing.T) {
		s := newStore(t)
		cfg := baseConfig()
		cfg["scrub"] = "  bytes_per_second: 104857600\n  start_delay: 0s\n  interval: 1s\n"
		d := startDaemon(t, s, cfg)
		file := flipInStore(t, s, s.data)
		deadline := time.Now().Add(20 * time.Second)
		for d.metric("storefs_quarantined_blobs") != "1" {
			if time.Now().After(deadline) {
				t.Fatalf("the scrubber did not quarantine the blob in %s (flipped a bit in %s); quarantined: %q; stderr:\n%s",
					20*time.Second, file, d.metric("storefs_quarantined_blobs"), d.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		checkUnreadable(t, s, d)
		if !strings.Contains(d.stderr.String(), "quarantined") {
			t.Errorf("no quarantine line in the log:\n%s", d.stderr)
		}
		if v := d.metric("storefs_scrub_corrupt_total"); v != "1" {
			t.Errorf("storefs_scrub_corrupt_total = %q, want 1", v)
		}
		d.alive()
		d.stop()
		out, err := exec.Command(storefsBin, "--store", "local:"+s.dir, "verify").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "quarantined blob") {
			t.Errorf("storefs verify after the quarantine: %v\n%s", err, out)
		}
	})

	t.Run("bit rot found at first open", func(t *testing.T) {
		s := newStore(t)
		cfg := baseConfig()
		cfg["store"] = "  verify_on_open: true\n"
		cfg["scrub"] = "  enabled: false\n"
		d := startDaemon(t, s, cfg)
		flipInStore(t, s, s.data)
		checkUnreadable(t, s, d)
		d.alive()
		d.stop()
	})

	t.Run("damaged meta.db", func(t *testing.T) {
		s := newStore(t)
		db := filepath.Join(s.dir, "meta.db")
		fi, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		garbage := make([]byte, fi.Size()-2*4096) // every page but the two meta pages
		rand.Read(garbage)
		f, err := os.OpenFile(db, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(garbage, 2*4096)
		f.Close()
		d := startDaemon(t, s, baseConfig())
		c, err := dialRPC(d.addrs["nfs"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		root, err := c.mountRoot()
		if err != nil {
			t.Fatal(err)
		}
		body, err := c.call(progNFS, 3, 3, xdr(nil).opaque(root).opaque([]byte(s.basename)), 5*time.Second)
		if err != nil || status(body) != 5 {
			t.Errorf("LOOKUP in a store with a damaged meta.db: %x, %v; want NFS3ERR_IO", body, err)
		}
		how, _ := answered(t, d.addrs["nfs"], callRecord(3, progMount, 3, procMnt, xdr(nil).opaque([]byte("/"+s.basename))))
		if !strings.HasPrefix(how, "reply") {
			t.Errorf("MNT of a store path: %s, want a reply", how)
		}
		checkUnreadable(t, s, d)
		d.alive()
		if !strings.Contains(d.stderr.String(), "meta.db") {
			t.Errorf("no log line names meta.db:\n%s", d.stderr)
		}
		d.stop()
		out, err := exec.Command(storefsBin, "--store", "local:"+s.dir, "verify").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "corrupt database meta.db") {
			t.Errorf("storefs verify of a damaged meta.db: %v (want exit status 1)\n%s", err, out)
		}
	})
}

// checkUnreadable checks that the file's bytes are not served by NFS or
// 9P: each read fails.
func checkUnreadable(t *testing.T, s *store, d *daemon) {
	t.Helper()
	nfscat := e2etest.NeedCommand(t, "nfs-cat")
	diodcat := e2etest.NeedCommand(t, "diodcat")
	_, port, _ := net.SplitHostPort(d.addrs["nfs"])
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nfscat, "nfs://127.0.0.1/"+s.basename+"/sub/data.bin?version=3&nfsport="+port+"&mountport="+port).Output()
	if err == nil || bytes.Equal(out, s.data) {
		t.Errorf("nfs-cat of the damaged file: %v, %d bytes; want a failure", err, len(out))
	}
	if len(out) > 0 && !bytes.Equal(out, s.data[:min(len(out), len(s.data))]) {
		t.Errorf("nfs-cat served %d bytes that differ from the file's", len(out))
	}
	out, err = exec.CommandContext(ctx, diodcat, "-s", d.addrs["ninep"], "-a", s.basename, "sub/data.bin").Output()
	if err == nil || bytes.Equal(out, s.data) {
		t.Errorf("diodcat of the damaged file: %v, %d bytes; want a failure", err, len(out))
	}
	if len(out) > 0 && !bytes.Equal(out, s.data[:min(len(out), len(s.data))]) {
		t.Errorf("diodcat served %d bytes that differ from the file's", len(out))
	}
}

//go:build linux

package virtiofs

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// guestMemory is the guest's RAM as the front-end shared it in
// SET_MEM_TABLE: each region's file descriptor mapped into our address
// space. Every access to guest memory goes through translate or
// translateUser, which return slices of a mapping and so are bounded by
// it: a guest address outside every region is an error, never a wild
// pointer.
//
// A guestMemory is immutable once built; the connection replaces the whole
// table only while no queue runs.
type guestMemory struct {
	regions []memRegion
}

// memRegion is one mapped region.
type memRegion struct {
	guestAddr uint64 // guest physical address of data[0]
	userAddr  uint64 // front-end virtual address of data[0]
	data      []byte // the region: a window into mapping
	mapping   []byte // what mmap returned, for munmap
}

// errNotMapped is wrapped by translation errors.
var errNotMapped = errors.New("address not in guest memory")

// mapGuestMemory maps the regions described by descs, one descriptor per
// region. It takes ownership of fds: they are closed whatever happens (a
// MAP_SHARED mapping outlives its descriptor).
func mapGuestMemory(descs []regionDesc, fds []int) (*guestMemory, error) {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if len(descs) != len(fds) {
		return nil, fmt.Errorf("%d memory regions but %d file descriptors", len(descs), len(fds))
	}
	mem := &guestMemory{}
	for i, d := range descs {
		r, err := mapRegion(d, fds[i])
		if err != nil {
			mem.unmap()
			return nil, fmt.Errorf("memory region %d (guest %#x, %d bytes): %w", i, d.guestAddr, d.size, err)
		}
		mem.regions = append(mem.regions, r)
	}
	return mem, nil
}

func mapRegion(d regionDesc, fd int) (memRegion, error) {
	const maxInt = int(^uint(0) >> 1)
	if d.size == 0 {
		return memRegion{}, errors.New("empty region")
	}
	end := d.mmapOffset + d.size
	if end < d.size || end > uint64(maxInt) || d.guestAddr+d.size < d.guestAddr || d.userAddr+d.size < d.userAddr {
		return memRegion{}, errors.New("region wraps around")
	}
	// A region larger than its file would fault (SIGBUS) on access past
	// the end: refuse it up front.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return memRegion{}, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < end {
		return memRegion{}, fmt.Errorf("file of %d bytes is shorter than the region's end %d", st.Size, end)
	}
	// mmap offsets must be page aligned, mmap_offset need not be: map
	// from 0 and slice, as every vhost-user back-end does.
	mapping, err := unix.Mmap(fd, 0, int(end), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return memRegion{}, fmt.Errorf("mmap: %w", err)
	}
	return memRegion{
		guestAddr: d.guestAddr,
		userAddr:  d.userAddr,
		data:      mapping[d.mmapOffset:end:end],
		mapping:   mapping,
	}, nil
}

// unmap releases every mapping; no slice of it may be used afterwards.
func (m *guestMemory) unmap() {
	if m == nil {
		return
	}
	for _, r := range m.regions {
		unix.Munmap(r.mapping)
	}
	m.regions = nil
}

// translateUser returns the n bytes at the front-end virtual address
// addr, which must lie within one region (rings do).
func (m *guestMemory) translateUser(addr, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if addr >= r.userAddr && addr-r.userAddr < uint64(len(r.data)) {
			off := addr - r.userAddr
			if n > uint64(len(r.data))-off {
				return nil, fmt.Errorf("front-end address %#x+%d crosses the end of its region: %w", addr, n, errNotMapped)
			}
			return r.data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("front-end address %#x: %w", addr, errNotMapped)
}

// appendGuest appends the slices holding the n bytes at guest physical
// address addr to iov. A buffer may span regions that are adjacent in
// guest memory; each part must be mapped.
func (m *guestMemory) appendGuest(iov [][]byte, addr, n uint64) ([][]byte, error) {
	if addr+n < addr {
		return iov, fmt.Errorf("guest buffer %#x+%d wraps around: %w", addr, n, errNotMapped)
	}
	for n > 0 {
		var part []byte
		for _, r := range m.regions {
			if addr >= r.guestAddr && addr-r.guestAddr < uint64(len(r.data)) {
				off := addr - r.guestAddr
				k := min(n, uint64(len(r.data))-off)
				part = r.data[off : off+k : off+k]
				break
			}
		}
		if part == nil {
			return iov, fmt.Errorf("guest address %#x (%d bytes left of the buffer): %w", addr, n, errNotMapped)
		}
		iov = appendJoined(iov, part)
		addr += uint64(len(part))
		n -= uint64(len(part))
	}
	return iov, nil
}

// appendJoined appends b to iov, joining it to the last buffer when b
// starts where that one ends in this process' memory. A guest's page
// cache pages are often neighbours in its memory, so a 128 KiB READ of 32
// page descriptors becomes a few buffers: fewer iovecs for go-fuse to
// slice (it allocates per buffer) and for preadv to walk.
func appendJoined(iov [][]byte, b []byte) [][]byte {
	if k := len(iov) - 1; k >= 0 {
		last := iov[k]
		if len(last) > 0 && unsafe.Add(unsafe.Pointer(unsafe.SliceData(last)), len(last)) == unsafe.Pointer(unsafe.SliceData(b)) {
			iov[k] = unsafe.Slice(unsafe.SliceData(last), len(last)+len(b))
			return iov
		}
	}
	return append(iov, b)
}

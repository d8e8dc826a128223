package feature

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// mapping is a private region of cryo's own, outside the Go heap, that a
// probe may protect and scan without disturbing anything else.
type mapping struct {
	b    []byte
	addr uint64
}

func mapPages(n int, prot, flags, fd int) (*mapping, error) {
	b, err := unix.Mmap(fd, 0, n*os.Getpagesize(), prot, flags)
	if err != nil {
		return nil, fmt.Errorf("mmap %d pages: %w", n, err)
	}
	return &mapping{b: b, addr: kabi.LocalIovec(b).Base}, nil
}

func (m *mapping) unmap() { unix.Munmap(m.b) }

func (m *mapping) page(i int) uint64 { return m.addr + uint64(i*os.Getpagesize()) }

// probeMapFiles maps a memfd of cryo's own and opens the mapping back
// through /proc/self/map_files, as dump does for every file-backed mapping.
func probeMapFiles() (string, error) {
	fd, err := unix.MemfdCreate("cryo-check-map-files", unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(os.Getpagesize())); err != nil {
		return "", err
	}
	m, err := mapPages(1, unix.PROT_READ, unix.MAP_SHARED, fd)
	if err != nil {
		return "", err
	}
	defer m.unmap()
	name := fmt.Sprintf("/proc/self/map_files/%x-%x", m.addr, m.addr+uint64(len(m.b)))
	if _, err := os.Readlink(name); err != nil {
		return "", classify("readlink "+name, err, "", unix.ENOENT)
	}
	f, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", classify("open "+name, err, "following map_files needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN")
	}
	defer unix.Close(f)
	var got, want unix.Stat_t
	if err := unix.Fstat(f, &got); err != nil {
		return "", err
	}
	if err := unix.Fstat(fd, &want); err != nil {
		return "", err
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		return "", fmt.Errorf("%s opened another file than the one mapped", name)
	}
	return "", nil
}

// scanPages runs PAGEMAP_SCAN over m on cryo's own pagemap and returns the
// regions in category cat.
func scanPages(m *mapping, cat uint64) ([]kabi.PageRegion, error) {
	pm, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pm)
	out := make([]kabi.PageRegion, 8)
	a := kabi.PmScanArg{Start: m.addr, End: m.addr + uint64(len(m.b)), CategoryMask: cat, ReturnMask: cat}
	n, err := kabi.PagemapScan(pm, &a, out)
	if err != nil {
		// An ioctl pagemap does not have: ENOTTY.
		return nil, classify("ioctl(PAGEMAP_SCAN)", err, "", unix.ENOTTY, unix.EINVAL)
	}
	return out[:n], nil
}

// probePagemapScan scans a stub's memory from outside, as the dump scans
// the process it dumps: /proc/PID/pagemap of another process, not cryo's
// own, which a cryo with file capabilities cannot open (it is not
// dumpable, so its /proc files are root's).
func probePagemapScan() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		ps := uint64(os.Getpagesize())
		addr, err := s.call(unix.SYS_MMAP, 0, 4*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return err
		}
		if err := inject.Errno(addr); err != nil {
			return fmt.Errorf("mmap in the stub: %w", err)
		}
		base := uint64(addr)
		for _, pg := range []uint64{0, 2} {
			if err := ptrace.WriteMem(s.pid, base+pg*ps, []byte{1}); err != nil {
				return err
			}
		}
		pm, err := unix.Open("/proc/"+strconv.Itoa(s.pid)+"/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return classify("open the stub's pagemap", err, "")
		}
		defer unix.Close(pm)
		out := make([]kabi.PageRegion, 8)
		a := kabi.PmScanArg{Start: base, End: base + 4*ps, CategoryMask: kabi.PAGE_IS_PRESENT, ReturnMask: kabi.PAGE_IS_PRESENT}
		n, err := kabi.PagemapScan(pm, &a, out)
		if err != nil {
			// An ioctl pagemap does not have: ENOTTY.
			return classify("ioctl(PAGEMAP_SCAN)", err, "", unix.ENOTTY, unix.EINVAL)
		}
		regions := out[:n]
		if len(regions) != 2 || regions[0].Start != base || regions[0].End != base+ps ||
			regions[1].Start != base+2*ps || regions[1].End != base+3*ps {
			return fmt.Errorf("PAGEMAP_SCAN saw present pages %v, pages 0 and 2 of %#x were written", regions, base)
		}
		return nil
	})
}

// probeUffdWPAsync write-protects a private region of cryo's own with a
// userfaultfd in async mode, writes one page, and asks PAGEMAP_SCAN which
// pages were written: the pair dump uses for incremental dumps. Async mode
// resolves write faults in the kernel, so no thread has to serve the uffd.
func probeUffdWPAsync() (string, error) {
	uffd, err := kabi.Userfaultfd(unix.O_CLOEXEC | unix.O_NONBLOCK | kabi.UFFD_USER_MODE_ONLY)
	if errors.Is(err, unix.EINVAL) {
		// UFFD_USER_MODE_ONLY is 5.11; before it, plain userfaultfd.
		uffd, err = kabi.Userfaultfd(unix.O_CLOEXEC | unix.O_NONBLOCK)
	}
	if err != nil {
		return "", classify("userfaultfd", err, "vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE", unix.ENOSYS)
	}
	defer unix.Close(uffd)
	api := kabi.UffdioAPI{API: kabi.UFFD_API, Features: kabi.UFFD_FEATURE_WP_ASYNC}
	if err := kabi.IoctlPtr(uffd, kabi.UFFDIO_API, &api); err != nil {
		return "", classify("UFFDIO_API(UFFD_FEATURE_WP_ASYNC)", err, "", unix.EINVAL)
	}
	if api.Features&kabi.UFFD_FEATURE_WP_ASYNC == 0 {
		return "", fmt.Errorf("%w: UFFDIO_API did not grant UFFD_FEATURE_WP_ASYNC", ErrNotSupported)
	}
	m, err := mapPages(4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1)
	if err != nil {
		return "", err
	}
	// Unmapped after the uffd is closed (defers run last-in first-out):
	// closing it first drops the protection.
	defer m.unmap()
	ps := os.Getpagesize()
	for i := range 4 {
		m.b[i*ps] = 1
	}
	rng := kabi.UffdioRange{Start: m.addr, Len: uint64(len(m.b))}
	reg := kabi.UffdioRegister{Range: rng, Mode: kabi.UFFDIO_REGISTER_MODE_WP}
	if err := kabi.IoctlPtr(uffd, kabi.UFFDIO_REGISTER, &reg); err != nil {
		return "", classify("UFFDIO_REGISTER(MODE_WP)", err, "", unix.EINVAL)
	}
	wp := kabi.UffdioWriteprotect{Range: rng, Mode: kabi.UFFDIO_WRITEPROTECT_MODE_WP}
	if err := kabi.IoctlPtr(uffd, kabi.UFFDIO_WRITEPROTECT, &wp); err != nil {
		return "", fmt.Errorf("UFFDIO_WRITEPROTECT: %w", err)
	}
	m.b[1*ps] = 2
	regions, err := scanPages(m, kabi.PAGE_IS_WRITTEN)
	if err != nil {
		return "", err
	}
	if len(regions) != 1 || regions[0].Start != m.page(1) || regions[0].End != m.page(2) {
		return "", fmt.Errorf("after write-protecting 4 pages and writing page 1, PAGEMAP_SCAN saw written %v", regions)
	}
	return "", nil
}

// probeSoftDirty checks the soft-dirty bit the way CRIU's pre-dump uses it:
// clear the bits of a process, write one page, and look for bit 55 of its
// pagemap entry. It works on a stub, because clear_refs acts on a whole
// address space.
func probeSoftDirty() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		dir := "/proc/" + strconv.Itoa(s.pid)
		// A page of the stub's scratch area: the probe writes it from
		// outside, as dump's later scan would see the program do.
		addr, err := s.put([]byte{1})
		if err != nil {
			return err
		}
		if err := os.WriteFile(dir+"/clear_refs", []byte("4"), 0); err != nil {
			return classify("write 4 to clear_refs", err, "", unix.EINVAL)
		}
		before, err := pagemapEntry(dir, addr)
		if err != nil {
			return err
		}
		if err := ptrace.WriteMem(s.pid, addr, []byte{2}); err != nil {
			return err
		}
		after, err := pagemapEntry(dir, addr)
		if err != nil {
			return err
		}
		switch {
		case after&kabi.PM_SOFT_DIRTY == 0:
			return fmt.Errorf("%w: a page written after clear_refs has no soft-dirty bit", ErrNotSupported)
		case before&kabi.PM_SOFT_DIRTY != 0:
			return fmt.Errorf("clear_refs 4 left the soft-dirty bit set")
		}
		return nil
	})
}

func pagemapEntry(dir string, addr uint64) (uint64, error) {
	f, err := os.Open(dir + "/pagemap")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/uint64(os.Getpagesize())*8)); err != nil {
		return 0, fmt.Errorf("pagemap entry of %#x: %w", addr, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

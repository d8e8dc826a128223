package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/sysvipc"
)

const pageSize = 4096

// area is one VMA as the dump sees it: the image entry plus how its pages
// are to be found.
type area struct {
	m     procfs.Mapping
	entry *vma.VmaEntry
	// pages says where the contents come from: not at all (file-backed
	// shared, vdso...), from pagemap of the process (private memory), or
	// from the shmem object behind it (shared anonymous, memfd).
	pages pageSource
}

type pageSource int

const (
	noPages      pageSource = iota
	privatePages            // present or swapped pages, read with process_vm_readv
	cowPages                // private file mapping: only pages no longer the file's
	shmemPages              // data extents of the shmem object, read through map_files
)

// madvise advice that shows in VmFlags and must be replayed on restore; the
// image keeps them as a bitmap of advice numbers, as CRIU does.
var madvOf = []struct {
	flag procfs.VmFlags
	adv  int
}{
	{procfs.VmHugePage, unix.MADV_HUGEPAGE},
	{procfs.VmNoHugePage, unix.MADV_NOHUGEPAGE},
	{procfs.VmDontCopy, unix.MADV_DONTFORK},
	{procfs.VmWipeOnFork, unix.MADV_WIPEONFORK},
	{procfs.VmDontDump, unix.MADV_DONTDUMP},
	{procfs.VmMergeable, unix.MADV_MERGEABLE},
	{procfs.VmSeqRead, unix.MADV_SEQUENTIAL},
	{procfs.VmRandRead, unix.MADV_RANDOM},
}

// classify builds the image entry of each mapping and decides how its
// contents are dumped. Mappings cryo cannot restore fail the dump here,
// before anything is written.
func (p *process) classify(maps []procfs.Mapping) ([]*area, error) {
	areas := make([]*area, 0, len(maps))
	for _, m := range maps {
		e := &vma.VmaEntry{
			Start: proto.Uint64(m.Start),
			End:   proto.Uint64(m.End),
			Pgoff: proto.Uint64(m.Offset),
			Shmid: proto.Uint64(0),
			Fd:    proto.Int64(-1),
		}
		var prot, flags, status uint32
		if m.Perms.Read {
			prot |= unix.PROT_READ
		}
		if m.Perms.Write {
			prot |= unix.PROT_WRITE
		}
		if m.Perms.Exec {
			prot |= unix.PROT_EXEC
		}
		if m.Perms.Shared {
			flags |= unix.MAP_SHARED
		} else {
			flags |= unix.MAP_PRIVATE
		}
		if m.VmFlags.Has(procfs.VmGrowsDown) {
			flags |= unix.MAP_GROWSDOWN
		}
		if m.VmFlags.Has(procfs.VmNoReserve) {
			flags |= unix.MAP_NORESERVE
		}
		if m.VmFlags.Has(procfs.VmDroppable) {
			// MAP_DROPPABLE is a mapping type of its own, not a flag.
			flags = flags&^unix.MAP_PRIVATE | unix.MAP_DROPPABLE
		}
		if lockFlags(m, &flags) {
			p.lockOnFault = append(p.lockOnFault, m.Start)
		}
		if m.VmFlags.Has(procfs.VmSealed) {
			p.sealed = append(p.sealed, m.Start)
		}
		var madv uint64
		for _, a := range madvOf {
			if m.VmFlags.Has(a.flag) {
				madv |= 1 << uint(a.adv)
			}
		}
		if madv != 0 {
			e.Madv = proto.Uint64(madv)
		}
		if err := p.refuseMapping(m); err != nil {
			return nil, err
		}
		a := &area{m: m, entry: e}
		status = kabi.VMA_AREA_REGULAR
		switch {
		case m.Kind == procfs.KindVsyscall:
			status = kabi.VMA_AREA_VSYSCALL
		case m.Kind == procfs.KindVdso:
			status |= kabi.VMA_AREA_VDSO
			flags |= unix.MAP_ANONYMOUS
		case m.Kind == procfs.KindVvar || m.Kind == procfs.KindVvarVclock:
			status |= kabi.VMA_AREA_VVAR
			flags |= unix.MAP_ANONYMOUS
		case m.VmFlags.Has(procfs.VmIO) || m.VmFlags.Has(procfs.VmPFNMap):
			return nil, fmt.Errorf("mapping %#x-%#x (%s): device memory (VM_IO/VM_PFNMAP): %w", m.Start, m.End, m.RawPath, ErrNotSupported)
		case m.VmFlags.Has(procfs.VmHugeTLB):
			return nil, fmt.Errorf("mapping %#x-%#x (%s): hugetlbfs: %w", m.Start, m.End, m.RawPath, ErrNotSupported)
		case sysvipc.IsShm(m):
			// Found again by its id at restore: the segment itself is the
			// tree's (package sysvipc), the VMA only an attachment.
			id, err := p.sysv.Add(p.pid, m)
			if err != nil {
				return nil, err
			}
			status |= kabi.VMA_AREA_SYSVIPC
			e.Shmid = proto.Uint64(id)
			e.Pgoff = proto.Uint64(0)
			// shmat gives SHM_RDONLY segments no VM_MAYWRITE: keep which.
			if !m.VmFlags.Has(procfs.VmMayWrite) {
				e.Fdflags = proto.Uint32(unix.O_RDONLY)
			} else {
				e.Fdflags = proto.Uint32(unix.O_RDWR)
			}
			a.pages = noPages
		case m.VmFlags.Has(procfs.VmMaybeGuard):
			// The flag is sticky and spreads to the VMAs a restore maps
			// next to it (they merge), so their boundaries could not come
			// back as they were.
			return nil, fmt.Errorf("mapping %#x-%#x (%s) of pid %d has had guard pages (MADV_GUARD_INSTALL, \"gu\"): %w", m.Start, m.End, m.RawPath, p.pid, ErrNotSupported)
		case m.Kind == procfs.KindUprobes:
			return nil, fmt.Errorf("mapping %#x-%#x [uprobes]: %w", m.Start, m.End, ErrNotSupported)
		case m.Kind == procfs.KindAnonShmemNamed || (m.Kind == procfs.KindFile && m.Perms.Shared && isShmemAnon(m)):
			status |= kabi.VMA_ANON_SHARED
			flags |= unix.MAP_ANONYMOUS
			e.Shmid = proto.Uint64(m.Inode)
			a.pages = shmemPages
		case m.Kind == procfs.KindFile && strings.HasPrefix(m.Path, "/memfd:"):
			status |= kabi.VMA_AREA_MEMFD
			id, err := p.files.Mapping(p.pid, m, func() (*os.File, error) { return p.mapFile(m) })
			if err != nil {
				return nil, err
			}
			e.Shmid = proto.Uint64(uint64(id))
			// A shared mapping's contents are the memfd's, dumped with
			// its inode; a private one has copied-on-write pages of its own.
			a.pages = noPages
			if !m.Perms.Shared {
				a.pages = cowPages
			}
		case m.Kind == procfs.KindFile:
			id, err := p.files.Mapping(p.pid, m, func() (*os.File, error) { return p.mapFile(m) })
			if err != nil {
				return nil, err
			}
			e.Shmid = proto.Uint64(uint64(id))
			if m.Perms.Shared {
				status |= kabi.VMA_FILE_SHARED
			} else {
				status |= kabi.VMA_FILE_PRIVATE
				a.pages = cowPages
			}
		case m.Kind == procfs.KindFile || m.Kind == procfs.KindSpecial:
			return nil, fmt.Errorf("mapping %#x-%#x (%s): %w", m.Start, m.End, m.RawPath, ErrNotSupported)
		default: // anonymous private: [heap], [stack], [anon:NAME], unnamed
			if m.Perms.Shared {
				status |= kabi.VMA_ANON_SHARED
				flags |= unix.MAP_ANONYMOUS
				e.Shmid = proto.Uint64(m.Inode)
				a.pages = shmemPages
				break
			}
			status |= kabi.VMA_ANON_PRIVATE
			flags |= unix.MAP_ANONYMOUS
			if m.Kind == procfs.KindHeap {
				status |= kabi.VMA_AREA_HEAP
			}
			if m.Kind == procfs.KindStack {
				status |= kabi.VMA_AREA_STACK
			}
			a.pages = privatePages
		}
		e.Prot = proto.Uint32(prot)
		e.Flags = proto.Uint32(flags)
		e.Status = proto.Uint32(status)
		areas = append(areas, a)
	}
	return areas, nil
}

// isShmemAnon tells shared anonymous memory (mmap MAP_SHARED|MAP_ANONYMOUS,
// which the kernel backs by a shmem file it names /dev/zero) from a real
// mapping of /dev/zero, which is also anonymous shared memory in effect.
func isShmemAnon(m procfs.Mapping) bool {
	return m.Path == "/dev/zero"
}

// run is a stretch of consecutive pages to dump.
type run struct {
	addr  uint64
	pages uint64
	// from says how to read it: process memory, or an offset in a file.
	file *os.File
	off  int64
	// force reads through /proc/PID/mem, for mappings the process itself
	// cannot read (PROT_NONE after being written).
	force bool
}

// findRuns lists the pages of every area that must go into the image.
func (p *process) findRuns(areas []*area) ([]run, error) {
	pm, err := os.Open("/proc/" + strconv.Itoa(p.pid) + "/pagemap")
	if err != nil {
		return nil, fmt.Errorf("open pagemap of %d: %w", p.pid, err)
	}
	defer pm.Close()
	var runs []run
	buf := make([]byte, 8*8192)
	pbuf := make([]byte, len(buf))
	for _, a := range areas {
		switch a.pages {
		case noPages:
			continue
		case shmemPages:
			if p.parentPagemap(a) != nil {
				continue // the same object, mapped the same way: the parent dumps it
			}
			r, err := p.shmemRuns(a)
			if err != nil {
				return nil, err
			}
			runs = append(runs, r...)
			continue
		}
		force := !a.m.Perms.Read
		first := len(runs) // runs never span two areas: restore writes each area its own way
		ppm := p.parentPagemap(a)
		if ppm == nil && feature.PagemapScan.Check() == nil {
			// No page frames to compare with a parent: let the kernel list
			// the pages (PAGEMAP_SCAN, 6.7), rather than walking 8 bytes of
			// pagemap per page in Go. The probe is cryo check's, asked once
			// (package feature caches it).
			got, err := scanRuns(pm, a, force)
			if err != nil {
				return nil, fmt.Errorf("PAGEMAP_SCAN of %d at %#x: %w", p.pid, a.m.Start, err)
			}
			runs = append(runs, got...)
			continue
		}
		for addr := a.m.Start; addr < a.m.End; {
			n := min((a.m.End-addr)/pageSize, uint64(len(buf)/8))
			if _, err := pm.ReadAt(buf[:n*8], int64(addr/pageSize*8)); err != nil {
				return nil, fmt.Errorf("read pagemap of %d at %#x: %w", p.pid, addr, err)
			}
			if ppm != nil {
				if _, err := ppm.ReadAt(pbuf[:n*8], int64(addr/pageSize*8)); err != nil {
					return nil, fmt.Errorf("read pagemap of %d at %#x: %w", p.parent.pid, addr, err)
				}
			}
			for i := uint64(0); i < n; i++ {
				e := binary.LittleEndian.Uint64(buf[i*8:])
				if e&kabi.PM_GUARD_REGION != 0 {
					return nil, fmt.Errorf("mapping %#x-%#x of pid %d has guard pages (MADV_GUARD_INSTALL) at %#x: %w", a.m.Start, a.m.End, p.pid, addr+i*pageSize, ErrNotSupported)
				}
				want := e&(kabi.PM_PRESENT|kabi.PM_SWAP) != 0
				if a.pages == cowPages && e&kabi.PM_FILE != 0 {
					want = false // still the file's page: restored by mapping the file
				}
				if !want {
					continue
				}
				va := addr + i*pageSize
				if ppm != nil && sameFrame(e, binary.LittleEndian.Uint64(pbuf[i*8:])) {
					p.inherit(va)
					continue
				}
				if l := len(runs); l > first && runs[l-1].addr+runs[l-1].pages*pageSize == va {
					runs[l-1].pages++
				} else {
					runs = append(runs, run{addr: va, pages: 1, force: force})
				}
			}
			addr += n * pageSize
		}
	}
	return runs, nil
}

// scanRuns lists the pages of area a to dump with PAGEMAP_SCAN: present or
// swapped, and for a private file mapping only those no longer the file's.
func scanRuns(pm *os.File, a *area, force bool) ([]run, error) {
	arg := kabi.PmScanArg{
		Start:             a.m.Start,
		End:               a.m.End,
		CategoryAnyofMask: kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED,
		ReturnMask:        kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED | kabi.PAGE_IS_FILE,
	}
	if a.pages == cowPages {
		arg.CategoryInverted = kabi.PAGE_IS_FILE
		arg.CategoryMask = kabi.PAGE_IS_FILE
	}
	var runs []run
	out := make([]kabi.PageRegion, 512)
	for arg.Start < a.m.End {
		n, err := kabi.PagemapScan(int(pm.Fd()), &arg, out)
		if err != nil {
			return nil, err
		}
		for _, r := range out[:n] {
			pages := (r.End - r.Start) / pageSize
			if l := len(runs); l > 0 && runs[l-1].addr+runs[l-1].pages*pageSize == r.Start {
				runs[l-1].pages += pages
			} else {
				runs = append(runs, run{addr: r.Start, pages: pages, force: force})
			}
		}
		if arg.WalkEnd <= arg.Start || arg.WalkEnd >= a.m.End {
			break
		}
		arg.Start = arg.WalkEnd
	}
	return runs, nil
}

// parentPagemap returns the parent's pagemap if area a is one the process
// inherited from its parent (meta.Inheritable), to compare page frames.
// Page frame numbers show only to CAP_SYS_ADMIN; without it they read as
// zero and nothing is declared inherited.
func (p *process) parentPagemap(a *area) *os.File {
	if p.parent == nil || p.parent.pagemap == nil {
		return nil
	}
	if p.parent.areaAt == nil {
		p.parent.areaAt = make(map[uint64]*area, len(p.parent.areas))
		for _, pa := range p.parent.areas {
			p.parent.areaAt[pa.m.Start] = pa
		}
	}
	if pa := p.parent.areaAt[a.m.Start]; pa != nil && meta.Inheritable(pa.entry, a.entry) {
		return p.parent.pagemap
	}
	return nil
}

// sameFrame says whether two pagemap entries map one present physical page.
func sameFrame(a, b uint64) bool {
	const pfn = 1<<55 - 1
	return a&kabi.PM_PRESENT != 0 && b&kabi.PM_PRESENT != 0 && a&pfn != 0 && a&pfn == b&pfn
}

// inherit records that the page at va is shared copy-on-write with the parent.
func (p *process) inherit(va uint64) {
	if l := len(p.inherited); l > 0 && p.inherited[l-1][0]+p.inherited[l-1][1]*pageSize == va {
		p.inherited[l-1][1]++
		return
	}
	p.inherited = append(p.inherited, [2]uint64{va, 1})
}

// shmemRuns lists the data extents of the shmem object behind a shared
// anonymous or memfd mapping, within the range the mapping covers. Reading
// the object rather than the process's page table also finds pages that
// other processes (or write(2) on a memfd) populated but this one never
// touched.
func (p *process) shmemRuns(a *area) ([]run, error) {
	f, err := p.mapFile(a.m)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, f)
	lo := int64(a.m.Offset)
	hi := lo + int64(a.m.Len())
	var runs []run
	for off := lo; off < hi; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("find data of mapping %#x-%#x of %d: %w", a.m.Start, a.m.End, p.pid, err)
		}
		if data >= hi {
			break
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find hole of mapping %#x-%#x of %d: %w", a.m.Start, a.m.End, p.pid, err)
		}
		hole = min(hole, hi)
		data &^= pageSize - 1
		runs = append(runs, run{
			addr:  a.m.Start + uint64(data-lo),
			pages: uint64(hole-data+pageSize-1) / pageSize,
			file:  f,
			off:   data,
		})
		off = hole
	}
	return runs, nil
}

// mapFile opens the object behind a mapping through /proc/PID/map_files,
// which works for deleted files and shmem that no path reaches (seed 002).
func (p *process) mapFile(m procfs.Mapping) (*os.File, error) {
	name := fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, m.Start, m.End)
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open %s: %w (following map_files needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)", name, err)
		}
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return f, nil
}

// batches are the page buffers of a dump, made once and reused by every
// process of the tree: fresh memory costs a page fault per page on first
// touch, which for many small processes would cost more than the copy.
var (
	batchesOnce sync.Once
	batches     chan []byte
)

const nBatches = 8

func batchPool() chan []byte {
	batchesOnce.Do(func() {
		batches = make(chan []byte, nBatches)
		for range nBatches {
			batches <- make([]byte, batchBytes)
		}
	})
	return batches
}

// pageBatch is what the reader hands the writer: bytes for consecutive runs.
type pageBatch struct {
	buf []byte
	err error
	// sum is the checksum of buf when it is exactly one image chunk.
	sum    uint32
	summed bool
}

// chunksWriter takes whole chunks of page data whose checksums are known.
type chunksWriter interface {
	WriteChunks(bufs [][]byte, sums []uint32) (int, error)
}

// maxGather bounds how many waiting chunks go into one writev.
const maxGather = nBatches

const (
	// batchBytes is one checksum chunk of the pages file: the reader sums
	// each batch while it is in its cache, and batches stay cache-sized.
	batchBytes = image.ChunkSize
	maxIov     = 1024 // UIO_MAXIOV
)

// writePages streams the runs' contents into w in pagemap order. One
// goroutine reads (process_vm_readv, or pread for shmem) while the caller
// writes, with two buffers in flight: the dump runs at the speed of the
// slower of the two instead of their sum, and memory stays bounded at
// 3 × batchBytes whatever the size of the process.
func (p *process) writePages(runs []run, w io.Writer) (uint64, error) {
	free := batchPool()
	full := make(chan pageBatch, 6)
	stop := make(chan struct{})
	go func() {
		defer close(full)
		var mem *os.File
		defer func() {
			if mem != nil {
				mem.Close()
			}
		}()
		var buf []byte
		defer func() {
			if buf != nil { // every buffer goes back to the pool, whatever happened
				free <- buf
			}
		}()
		var local, remote []kabi.Iovec
		flush := func() bool {
			if len(remote) > 0 {
				n, err := kabi.ProcessVMReadv(p.pid, local, remote)
				want := 0
				for _, r := range remote {
					want += int(r.Len)
				}
				if err == nil && n != want {
					err = fmt.Errorf("short read %d of %d bytes", n, want)
				}
				if err != nil {
					full <- pageBatch{err: fmt.Errorf("read memory of %d at %#x: %w", p.pid, remote[0].Base, err)}
					return false
				}
				local, remote = local[:0], remote[:0]
			}
			if len(buf) > 0 {
				b := pageBatch{buf: buf}
				if len(buf) == image.ChunkSize {
					b.sum, b.summed = image.ChunkSum(buf), true
				}
				select {
				case full <- b:
				case <-stop:
					return false
				}
				buf = nil
			}
			return true
		}
		for _, r := range runs {
			for done := uint64(0); done < r.pages; {
				if buf == nil {
					select {
					case buf = <-free:
						buf = buf[:0]
					case <-stop:
						return
					}
				}
				n := min(r.pages-done, uint64(cap(buf)-len(buf))/pageSize)
				start := len(buf)
				buf = buf[:start+int(n*pageSize)]
				dst := buf[start:]
				addr := r.addr + done*pageSize
				switch {
				case r.file != nil:
					k, err := r.file.ReadAt(dst, r.off+int64(done*pageSize))
					if err != nil && !errors.Is(err, io.EOF) {
						full <- pageBatch{err: fmt.Errorf("read shared memory of %d at %#x: %w", p.pid, addr, err)}
						return
					}
					clear(dst[k:]) // past the end of the object: zeros, not a stale buffer

				case r.force:
					if mem == nil {
						var err error
						if mem, err = os.Open("/proc/" + strconv.Itoa(p.pid) + "/mem"); err != nil {
							full <- pageBatch{err: err}
							return
						}
					}
					if _, err := mem.ReadAt(dst, int64(addr)); err != nil {
						full <- pageBatch{err: fmt.Errorf("read memory of %d at %#x: %w", p.pid, addr, err)}
						return
					}
				default:
					local = append(local, kabi.LocalIovec(dst))
					remote = append(remote, kabi.Iovec{Base: addr, Len: uint64(len(dst))})
					if len(remote) == maxIov && !flush() {
						return
					}
				}
				done += n
				if len(buf) == cap(buf) && !flush() {
					return
				}
			}
		}
		flush()
	}()
	defer func() {
		close(stop)
		for b := range full { // let the reader finish before its buffers go
			if b.buf != nil {
				free <- b.buf
			}
		}
	}()
	var written uint64
	var held *pageBatch // a batch taken while gathering, not written yet
	next := func() (pageBatch, bool) {
		if held != nil {
			b := *held
			held = nil
			return b, true
		}
		b, ok := <-full
		return b, ok
	}
	cw, chunked := w.(chunksWriter)
	bufs := make([][]byte, 0, maxGather)
	sums := make([]uint32, 0, maxGather)
	for {
		b, ok := next()
		if !ok {
			break
		}
		if b.err != nil {
			return written, b.err
		}
		group := []pageBatch{b}
		// Gather the summed chunks already waiting into one writev.
		for chunked && b.summed && len(group) < maxGather {
			var nb pageBatch
			select {
			case nb, ok = <-full:
			default:
				ok = false
			}
			if !ok {
				break
			}
			if nb.err != nil || !nb.summed {
				held = &nb
				break
			}
			group = append(group, nb)
		}
		err := p.aborted()
		if err == nil {
			if chunked && b.summed {
				bufs, sums = bufs[:0], sums[:0]
				for _, g := range group {
					bufs = append(bufs, g.buf)
					sums = append(sums, g.sum)
				}
				_, err = cw.WriteChunks(bufs, sums)
			} else {
				_, err = w.Write(b.buf)
			}
		}
		for _, g := range group {
			written += uint64(len(g.buf))
			free <- g.buf
		}
		if err != nil {
			return written, err
		}
	}
	return written / pageSize, nil
}

// pagemapEntries turns runs into the image's pagemap entries.
func pagemapEntries(runs []run) []*pagemap.PagemapEntry {
	out := make([]*pagemap.PagemapEntry, 0, len(runs))
	for _, r := range runs {
		out = append(out, &pagemap.PagemapEntry{
			Vaddr:         proto.Uint64(r.addr),
			CompatNrPages: proto.Uint32(uint32(min(r.pages, 1<<31))),
			NrPages:       proto.Uint64(r.pages),
			Flags:         proto.Uint32(kabi.PE_PRESENT),
		})
	}
	return out
}

package restore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sort"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/sysvipc"
)

const (
	pageSize = 4096
	taskSize = 0x7ffffffff000 // TASK_SIZE_MAX with 4-level page tables
)

// clearAddressSpace unmaps everything the child inherited from the stub
// except the scratch area.
func (c *child) clearAddressSpace() error {
	b := c.batch()
	hi := c.scratch + scratchSize
	b.Add("munmap below the scratch area", unix.SYS_MUNMAP, 0, c.scratch)
	b.Add("munmap above the scratch area", unix.SYS_MUNMAP, hi, taskSize-hi)
	return b.Run()
}

// mapping is a VMA of the image with what restore needs to know of it.
type mapping struct {
	e     *vma.VmaEntry
	shmem bool // contents written through the shmem object, not the process
	// accounted VMAs are mapped writable and lose the write permission
	// only after their pages are in (see protectAccounted).
	accounted bool
	// kept VMAs were inherited from the parent, not mapped by restore.
	kept bool
	// separate VMAs are anonymous ones the kernel kept apart from an
	// adjacent one that looks the same (separateAnon); toggled ones of
	// them are set apart with MADV_DONTFORK until their pages are in.
	separate, toggled bool
}

// protectAccounted takes the write permission away from the VMAs that were
// writable once (meta.AccountedReadOnly). The kernel keeps VM_ACCOUNT on
// such a VMA only if it already has an anon_vma, that is if a page of it
// was ever faulted (mm/mprotect.c, mprotect_fixup): an anonymous one whose
// pages were all zero gets one page touched and dropped again first. The
// touches are writes from outside, all made before the batch of madvise
// and mprotect calls, which are independent of each other.
func (r *restorer) protectAccounted(maps []mapping, filled map[uint64]bool) error {
	c := r.c
	b := c.batch()
	// Adjacent accounted VMAs with the same protection take one mprotect.
	var run struct {
		start, end, prot uint64
		first            *vma.VmaEntry
	}
	flush := func() {
		if run.end == 0 {
			return
		}
		start, end, first := run.start, run.end, run.first
		b.Add("mprotect", unix.SYS_MPROTECT, start, end-start, run.prot).
			Describe(func() string {
				if end == first.GetEnd() {
					return "mprotect " + r.describe(first)
				}
				return fmt.Sprintf("mprotect %#x-%#x (adjacent VMAs from %s)", start, end, r.describe(first))
			})
		run.end = 0
	}
	for _, m := range maps {
		if !m.accounted {
			flush()
			continue
		}
		e := m.e
		start, end, prot := e.GetStart(), e.GetEnd(), uint64(e.GetProt())
		if !filled[start] {
			if err := ptrace.WriteMem(c.pid, start, []byte{0}); err != nil {
				return err
			}
			b.Add("madvise(MADV_DONTNEED)", unix.SYS_MADVISE, start, pageSize, unix.MADV_DONTNEED).
				Describe(func() string { return "madvise(MADV_DONTNEED) of the first page of " + r.describe(e) })
		}
		if run.end == start && run.prot == prot {
			run.end = end
			continue
		}
		flush()
		run.start, run.end, run.prot, run.first = start, end, prot, e
	}
	flush()
	return b.Run()
}

// describe names a VMA of the image in errors: "0x7f..-0x7f.. r-xp of
// /usr/lib/libc.so.6".
func (r *restorer) describe(e *vma.VmaEntry) string {
	prot := []byte("---p")
	for i, bit := range []uint32{unix.PROT_READ, unix.PROT_WRITE, unix.PROT_EXEC} {
		if e.GetProt()&bit != 0 {
			prot[i] = "rwx"[i]
		}
	}
	if e.GetFlags()&unix.MAP_SHARED != 0 {
		prot[3] = 's'
	}
	s := fmt.Sprintf("%#x-%#x %s", e.GetStart(), e.GetEnd(), prot)
	switch {
	case has(e, kabi.VMA_AREA_SYSVIPC):
		return s + " of System V segment " + strconv.FormatUint(e.GetShmid(), 10)
	case has(e, kabi.VMA_ANON_SHARED):
		return s + " of shared memory " + strconv.FormatUint(e.GetShmid(), 10)
	case has(e, kabi.VMA_AREA_MEMFD) || has(e, kabi.VMA_FILE_PRIVATE) || has(e, kabi.VMA_FILE_SHARED):
		if f := r.l.files[uint32(e.GetShmid())]; f != nil {
			switch {
			case f.GetReg() != nil:
				return s + " of " + f.GetReg().GetName()
			case f.GetMemfd() != nil:
				return s + " of memfd " + strconv.FormatUint(uint64(f.GetMemfd().GetInodeId()), 10)
			}
		}
		return s + " of file " + strconv.FormatUint(e.GetShmid(), 10)
	}
	return s
}

func has(e *vma.VmaEntry, bit uint32) bool { return e.GetStatus()&bit != 0 }

// mapAll creates every VMA of the image at its address. The fds the
// mappings need (files, shared memory, memfds) are opened first, one
// injected call each: they are what the mmaps depend on. The mmaps, which
// depend on nothing but those fds, then run as one batch, and the fds are
// closed in another.
func (r *restorer) mapAll(kept map[uint64]bool) ([]mapping, error) {
	c := r.c
	vmas := r.l.mm.GetVmas()
	out := make([]mapping, 0, len(vmas))
	acc := map[uint64]bool{}
	for _, a := range r.l.meta.AccountedReadOnly[c.pid] {
		acc[a] = true
	}
	fileFds := map[uint64]uint64{} // file id → fd in the child
	shmFds := map[uint64]uint64{}  // shmid → fd of the shmem object
	defer func() {
		// These are fds restore itself just opened: a close can only fail
		// if one is not open any more, which is logged, not fatal.
		b := c.batch()
		var closes []inject.Step
		for _, fds := range []map[uint64]uint64{fileFds, shmFds} {
			for _, fd := range fds {
				closes = append(closes, b.Add("close "+strconv.FormatUint(fd, 10), unix.SYS_CLOSE, fd).Tolerate())
			}
		}
		err := b.Run()
		for _, st := range closes {
			if _, e := st.Result(); e != nil && err == nil {
				err = e
			}
		}
		if err != nil {
			r.log.Warn("close the fds of the mappings", "pid", c.pid, "err", err)
		}
	}()
	b := c.batch()
	// Each mmap of the batch, and the address it must return.
	type mmapStep struct {
		step       inject.Step
		start, end uint64
	}
	var mmaps []mmapStep
	// A run of adjacent private anonymous VMAs that are mapped with the
	// same protection and flags is mapped by one mmap: the kernel would
	// merge their separate mappings into one VMA anyway (nothing tells
	// fresh anonymous VMAs apart before they have pages), so the result is
	// the same, minus one syscall and one merge per VMA. They get their
	// own VMAs back when protectAccounted and adviseAll change them.
	var run struct {
		start, end, prot, flags uint64
		first                   *vma.VmaEntry
	}
	flush := func() {
		if run.end == 0 {
			return
		}
		start, end, first := run.start, run.end, run.first
		st := b.Add("mmap", unix.SYS_MMAP, start, end-start, run.prot, run.flags, ^uint64(0), 0).
			Describe(func() string {
				if end == first.GetEnd() {
					return "mmap " + r.describe(first)
				}
				return fmt.Sprintf("mmap %#x-%#x (adjacent anonymous VMAs from %s)", start, end, r.describe(first))
			})
		mmaps = append(mmaps, mmapStep{st, start, end})
		run.end = 0
	}
	// The last private anonymous VMA mapped, for separateAnon.
	var prevAnon struct {
		e         *vma.VmaEntry
		idx       int
		accounted bool
		toggled   bool
	}
	for _, e := range vmas {
		start, end := e.GetStart(), e.GetEnd()
		if has(e, kabi.VMA_AREA_VSYSCALL) || has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
			continue // the kernel's own; the vdso is re-created by mapVdso
		}
		if end <= start || start&(pageSize-1) != 0 || end&(pageSize-1) != 0 || end > taskSize {
			return nil, &image.FormatError{File: r.mmName(), Offset: -1, Err: fmt.Errorf("vma %#x-%#x out of range: %w", start, end, image.ErrImageCorrupt)}
		}
		if start < c.scratch+scratchSize && end > c.scratch {
			return nil, fmt.Errorf("vma %#x-%#x overlaps the scratch area", start, end)
		}
		if kept[start] {
			flush()
			// Inherited from the parent with its pages (see inherit.go).
			out = append(out, mapping{e: e, shmem: has(e, kabi.VMA_ANON_SHARED) || (has(e, kabi.VMA_AREA_MEMFD) && e.GetFlags()&unix.MAP_SHARED != 0), kept: true})
			continue
		}
		length := end - start
		prot := uint64(e.GetProt())
		// Locks come once the pages are in (lockAll).
		flags := uint64(e.GetFlags())&^unix.MAP_LOCKED | unix.MAP_FIXED
		fd := ^uint64(0)
		pgoff := e.GetPgoff()
		m := mapping{e: e}
		switch {
		case has(e, kabi.VMA_ANON_SHARED):
			id := e.GetShmid()
			sfd, ok := shmFds[id]
			if !ok {
				var err error
				if sfd, err = r.shmemFd(id); err != nil {
					return nil, fmt.Errorf("map %#x-%#x: %w", start, end, err)
				}
				shmFds[id] = sfd
			}
			fd = sfd
			flags &^= unix.MAP_ANONYMOUS
			m.shmem = true
		case has(e, kabi.VMA_AREA_MEMFD):
			f := r.l.files[uint32(e.GetShmid())]
			if f == nil || f.GetMemfd() == nil {
				return nil, &image.FormatError{File: r.mmName(), Offset: -1, Err: fmt.Errorf("vma %#x-%#x names memfd file %d, not in the image: %w", start, end, e.GetShmid(), image.ErrImageCorrupt)}
			}
			mfd, err := r.memfdFd(f.GetMemfd().GetInodeId())
			if err != nil {
				return nil, err
			}
			fd = mfd
		case has(e, kabi.VMA_FILE_PRIVATE) || has(e, kabi.VMA_FILE_SHARED):
			id := e.GetShmid()
			ffd, ok := fileFds[id]
			if !ok {
				f := r.l.files[uint32(id)]
				if f == nil || f.GetReg() == nil {
					return nil, &image.FormatError{File: r.mmName(), Offset: -1, Err: fmt.Errorf("vma %#x-%#x names file %d, not in files.img: %w", start, end, id, image.ErrImageCorrupt)}
				}
				var err error
				if ffd, err = r.openFile(f, f.GetReg().GetFlags()); err != nil {
					return nil, fmt.Errorf("mapping %#x-%#x: %w", start, end, err)
				}
				// A flock only the mapping held is taken on the open file
				// it maps, which keeps it once this fd is closed.
				if err := r.t.files.TakeMappingLocks(r.proc(), uint32(id), ffd); err != nil {
					return nil, fmt.Errorf("mapping %#x-%#x: %w", start, end, err)
				}
				fileFds[id] = ffd
			}
			fd = ffd
		case has(e, kabi.VMA_AREA_SYSVIPC):
			// Attached again to the segment the sysv stage made.
			id := e.GetShmid()
			if !r.t.sysv.Has(id) || (r.t.sysv.Size(id)+pageSize-1)&^(pageSize-1) != length {
				return nil, &image.FormatError{File: r.mmName(), Offset: -1, Err: fmt.Errorf("vma %#x-%#x names System V segment id %d, not in the image or of another size: %w", start, end, id, image.ErrImageCorrupt)}
			}
			flush()
			shmFlags, got := sysvipc.ShmatFlags(e.GetProt(), e.GetFdflags()&unix.O_ACCMODE == unix.O_RDWR)
			st := b.Add("shmat", unix.SYS_SHMAT, id, start, shmFlags).
				Describe(func() string { return "shmat " + r.describe(e) })
			mmaps = append(mmaps, mmapStep{st, start, end})
			if got != prot {
				b.Add("mprotect", unix.SYS_MPROTECT, start, length, prot).
					Describe(func() string { return "mprotect " + r.describe(e) })
			}
			out = append(out, m)
			continue
		case has(e, kabi.VMA_ANON_PRIVATE):
			pgoff = 0
		default:
			return nil, fmt.Errorf("vma %#x-%#x with status %#x: %w", start, end, e.GetStatus(), ErrNotSupported)
		}
		accounted := prot&unix.PROT_WRITE == 0 && acc[start]
		mprot := prot
		if accounted {
			mprot |= unix.PROT_WRITE
		}
		m.accounted = accounted
		if has(e, kabi.VMA_ANON_PRIVATE) && fd == ^uint64(0) {
			if p := prevAnon.e; p != nil && p.GetEnd() == start && prevAnon.accounted == accounted && p.GetProt() == e.GetProt() &&
				p.GetFlags() == e.GetFlags() && p.GetMadv() == e.GetMadv() {
				// The kernel kept these two apart though nothing of theirs
				// differs that restore sets (their anon_vmas do): mapped
				// as they are they would merge.
				m.separate, out[prevAnon.idx].separate = true, true
				m.toggled = !prevAnon.toggled
			}
			prevAnon.e, prevAnon.idx, prevAnon.accounted, prevAnon.toggled = e, len(out), accounted, m.toggled
		}
		out = append(out, m)
		if fd == ^uint64(0) && flags&unix.MAP_GROWSDOWN == 0 {
			if run.end == start && run.prot == mprot && run.flags == flags {
				run.end = end
				continue
			}
			flush()
			run.start, run.end, run.prot, run.flags, run.first = start, end, mprot, flags, e
			continue
		}
		flush()
		st := b.Add("mmap", unix.SYS_MMAP, start, length, mprot, flags, fd, pgoff).
			Describe(func() string { return "mmap " + r.describe(e) })
		mmaps = append(mmaps, mmapStep{st, start, end})
	}
	flush()
	if err := b.Run(); err != nil {
		return nil, err
	}
	for _, m := range mmaps {
		ret, err := m.step.Result()
		if err != nil {
			return nil, err
		}
		if ret != m.start {
			return nil, fmt.Errorf("map %#x-%#x: kernel placed it at %#x", m.start, m.end, ret)
		}
	}
	// Every other VMA of a run the kernel had kept apart is set apart
	// (separateAnon) before any page comes in.
	b = c.batch()
	for _, m := range out {
		if m.toggled {
			e := m.e
			b.Add("madvise(MADV_DONTFORK)", unix.SYS_MADVISE, e.GetStart(), e.GetEnd()-e.GetStart(), unix.MADV_DONTFORK).
				Describe(func() string { return "madvise(MADV_DONTFORK) of " + r.describe(e) + " (set apart)" })
		}
	}
	if err := b.Run(); err != nil {
		return nil, err
	}
	for _, m := range out {
		if m.shmem && has(m.e, kabi.VMA_ANON_SHARED) && !m.kept {
			if _, ok := r.t.shm[m.e.GetShmid()]; !ok {
				r.t.shm[m.e.GetShmid()] = shmOwner{pid: c.pid, start: m.e.GetStart(), end: m.e.GetEnd()}
			}
		}
	}
	return out, nil
}

// separateAnon keeps apart adjacent private anonymous VMAs that look the
// same but that the kernel kept apart (each had its own anon_vma, as a
// JVM's committed regions do): two VMAs with different anon_vmas never
// merge, one without merges with its neighbour. A first fault gives a VMA
// the anon_vma of a neighbour whose flags differ only in protection
// (mm/rmap.c, anon_vma_compatible), so a protection toggle would not do:
// mapAll set every other VMA of such a run apart with MADV_DONTFORK
// before the pages came in, so that each got an anon_vma of its own
// (one without pages gets a page touched and dropped again, here); then
// MADV_DOFORK gives the flag back (adviseAll sets what the image has),
// and the kernel leaves them apart.
func (r *restorer) separateAnon(maps []mapping, filled map[uint64]bool) error {
	c := r.c
	var mem *ptrace.Mem
	b := c.batch()
	for _, m := range maps {
		if !m.separate || filled[m.e.GetStart()] {
			continue
		}
		if mem == nil {
			var err error
			if mem, err = ptrace.OpenMem(c.pid); err != nil {
				return err
			}
			defer mem.Close()
		}
		// Through /proc/PID/mem: it writes what the protection forbids.
		if err := mem.WriteAt([]byte{0}, m.e.GetStart()); err != nil {
			return fmt.Errorf("touch %s: %w", r.describe(m.e), err)
		}
		e := m.e
		b.Add("madvise(MADV_DONTNEED)", unix.SYS_MADVISE, e.GetStart(), pageSize, unix.MADV_DONTNEED).
			Describe(func() string { return "madvise(MADV_DONTNEED) of the first page of " + r.describe(e) })
	}
	for _, m := range maps {
		if !m.toggled {
			continue
		}
		e := m.e
		b.Add("madvise(MADV_DOFORK)", unix.SYS_MADVISE, e.GetStart(), e.GetEnd()-e.GetStart(), unix.MADV_DOFORK).
			Describe(func() string { return "madvise(MADV_DOFORK) of " + r.describe(e) + " (its own VMA now)" })
	}
	return b.Run()
}

// shmemFd returns an fd on shared anonymous object shmid: the one a process
// of the tree already maps, reached through its /proc/PID/map_files entry
// (seed 002), or a new one as big as the tree needs.
func (r *restorer) shmemFd(id uint64) (uint64, error) {
	c := r.c
	if o, ok := r.t.shm[id]; ok {
		path, err := c.str(fmt.Sprintf("/proc/%d/map_files/%x-%x", o.pid, o.start, o.end))
		if err != nil {
			return 0, err
		}
		return c.call(c.leader, "open shared memory of "+strconv.Itoa(o.pid), unix.SYS_OPENAT, uint64(unixAtFdcwd), path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	}
	return r.newShmem(r.t.shmLen[id])
}

func (r *restorer) mmName() string { return fmt.Sprintf("mm-%d.img", r.c.pid) }

// newShmem creates a shared anonymous object of size bytes in the child and
// returns an fd on it. The object is what mmap(MAP_SHARED|MAP_ANONYMOUS)
// makes (it shows as "/dev/zero (deleted)" in maps, as before the dump);
// mapping it once wherever the kernel likes and reopening it through
// /proc/self/map_files gives an fd that every VMA sharing it can map at its
// own offset (seed 002).
func (r *restorer) newShmem(size uint64) (uint64, error) {
	c := r.c
	size = (size + pageSize - 1) &^ (pageSize - 1)
	tmp, err := c.call(c.leader, "mmap shared", unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return 0, err
	}
	path, err := c.str(fmt.Sprintf("/proc/self/map_files/%x-%x", tmp, tmp+size))
	if err != nil {
		return 0, err
	}
	fd, err := c.call(c.leader, "open shared memory", unix.SYS_OPENAT, uint64(unixAtFdcwd), path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if _, err := c.call(c.leader, "munmap", unix.SYS_MUNMAP, tmp, size); err != nil {
		return 0, err
	}
	return fd, nil
}

const unixAtFdcwd = uint64(0xffffffffffffff9c) // AT_FDCWD (-100)

// fillPages writes the image's pages into the child: private memory with
// process_vm_writev (or /proc/PID/mem where the mapping is not writable),
// shared memory through its object, so other mappers see it too.
func (r *restorer) fillPages(maps []mapping, filled map[uint64]bool, progress func(done, total uint64)) (uint64, error) {
	pr, err := r.l.dir.OpenPages(r.l.pagesID)
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	sort.Slice(maps, func(i, j int) bool { return maps[i].e.GetStart() < maps[j].e.GetStart() })
	find := func(addr uint64) *mapping {
		i := sort.Search(len(maps), func(i int) bool { return maps[i].e.GetEnd() > addr })
		if i < len(maps) && maps[i].e.GetStart() <= addr {
			return &maps[i]
		}
		return nil
	}
	mem, err := ptrace.OpenMem(r.c.pid)
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	shm := map[uint64]*os.File{}
	defer func() {
		for _, f := range shm {
			f.Close()
		}
	}()
	var total uint64
	for _, e := range r.l.pagemap {
		total += e.GetNrPages()
	}
	w := newBatchWriter(r.c.pid)
	buf := make([]byte, 4<<20)
	var done uint64
	pmName := fmt.Sprintf("pagemap-%d.img", r.c.pid)
	for _, e := range r.l.pagemap {
		addr, n := e.GetVaddr(), e.GetNrPages()
		m := find(addr)
		if m == nil || addr+n*pageSize > m.e.GetEnd() || n > 1<<36 {
			return done, &image.FormatError{File: pmName, Offset: -1, Err: fmt.Errorf("pages %#x+%d outside any single mapping: %w", addr, n, image.ErrImageCorrupt)}
		}
		filled[m.e.GetStart()] = true
		for n > 0 {
			k := min(n, uint64(len(buf))/pageSize)
			if w.room() < k*pageSize {
				if err := w.flush(); err != nil {
					return done, err
				}
			}
			var dst []byte
			writable := (m.e.GetProt()&unix.PROT_WRITE != 0 || m.accounted) && !m.shmem
			if writable {
				dst = w.take(k * pageSize)
			} else {
				dst = buf[:k*pageSize]
			}
			if _, err := io.ReadFull(pr, dst); err != nil {
				return done, fmt.Errorf("pages for %#x: %w", addr, err)
			}
			switch {
			case m.shmem:
				f, err := r.shmFile(shm, m)
				if err != nil {
					return done, err
				}
				if _, err := f.WriteAt(dst, int64(addr-m.e.GetStart()+m.e.GetPgoff())); err != nil {
					return done, fmt.Errorf("write shared memory at %#x: %w", addr, err)
				}
			case writable:
				w.add(addr, k*pageSize)
			default:
				if err := mem.WriteAt(dst, addr); err != nil {
					return done, err
				}
			}
			addr += k * pageSize
			n -= k
			done += k
			if progress != nil {
				progress(done, total)
			}
		}
	}
	if err := w.flush(); err != nil {
		return done, err
	}
	return done, nil
}

// shmFile opens the object behind a shared mapping of the child through
// map_files, so its pages are written into the object itself.
func (r *restorer) shmFile(cache map[uint64]*os.File, m *mapping) (*os.File, error) {
	if f, ok := cache[m.e.GetStart()]; ok {
		return f, nil
	}
	name := fmt.Sprintf("/proc/%d/map_files/%x-%x", r.c.pid, m.e.GetStart(), m.e.GetEnd())
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	cache[m.e.GetStart()] = f
	return f, nil
}

// batchWriter gathers writes to writable private memory into few
// process_vm_writev calls.
type batchWriter struct {
	pid    int
	buf    []byte
	local  []kabi.Iovec
	remote []kabi.Iovec
}

func newBatchWriter(pid int) *batchWriter {
	return &batchWriter{pid: pid, buf: make([]byte, 0, 8<<20)}
}

func (w *batchWriter) room() uint64 {
	if len(w.remote) >= 1024 {
		return 0
	}
	return uint64(cap(w.buf) - len(w.buf))
}

func (w *batchWriter) take(n uint64) []byte {
	s := len(w.buf)
	w.buf = w.buf[:s+int(n)]
	return w.buf[s:]
}

func (w *batchWriter) add(addr, n uint64) {
	b := kabi.LocalIovec(w.buf[len(w.buf)-int(n):])
	// Pages of adjacent VMAs follow each other in the image as they do in
	// memory: one iovec for the lot, as the kernel pins each iovec's pages
	// on its own (process_vm_rw_core), whatever VMAs they fall in.
	if k := len(w.remote) - 1; k >= 0 && w.remote[k].Base+w.remote[k].Len == addr && w.local[k].Base+w.local[k].Len == b.Base {
		w.remote[k].Len += n
		w.local[k].Len += n
		return
	}
	w.local = append(w.local, b)
	w.remote = append(w.remote, kabi.Iovec{Base: addr, Len: n})
}

func (w *batchWriter) flush() error {
	if len(w.remote) == 0 {
		w.buf = w.buf[:0]
		return nil
	}
	want := 0
	for _, r := range w.remote {
		want += int(r.Len)
	}
	n, err := kabi.ProcessVMWritev(w.pid, w.local, w.remote)
	if err == nil && n != want {
		err = fmt.Errorf("short write %d of %d bytes", n, want)
	}
	if err != nil {
		return fmt.Errorf("write memory of %d at %#x: %w", w.pid, w.remote[0].Base, err)
	}
	w.buf, w.local, w.remote = w.buf[:0], w.local[:0], w.remote[:0]
	return nil
}

// adviseAll replays the madvise advice that shows in VmFlags. Adjacent
// VMAs with the same advice get it in one madvise over all of them: the
// kernel applies advice VMA by VMA within a range, so the result is the
// same. It runs before protectAccounted, while a run of anonymous VMAs
// that mapAll mapped at once is still one VMA: the advice is then set on
// that one, and the VMAs that mprotect splits off inherit it, instead of
// being changed one by one.
func (r *restorer) adviseAll() error {
	b := r.c.batch()
	type run struct {
		start, end uint64
		first      *vma.VmaEntry
		n          int
	}
	var runs [64]run
	flush := func(adv int) {
		ru := runs[adv]
		if ru.n == 0 {
			return
		}
		b.Add("madvise", unix.SYS_MADVISE, ru.start, ru.end-ru.start, uint64(adv)).
			Describe(func() string {
				if ru.n == 1 {
					return fmt.Sprintf("madvise(%d) of %s", adv, r.describe(ru.first))
				}
				return fmt.Sprintf("madvise(%d) of %#x-%#x (%d VMAs from %s)", adv, ru.start, ru.end, ru.n, r.describe(ru.first))
			})
		runs[adv] = run{}
	}
	var open uint64 // advice with a run in runs
	for _, e := range r.l.mm.GetVmas() {
		madv := e.GetMadv()
		if has(e, kabi.VMA_AREA_VSYSCALL) || has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
			madv = 0 // their flags are the kernel's
		}
		for m := open; m != 0; m &= m - 1 {
			adv := bits.TrailingZeros64(m)
			if madv&(1<<adv) != 0 && runs[adv].end == e.GetStart() {
				runs[adv].end = e.GetEnd()
				runs[adv].n++
				madv &^= 1 << adv
				continue
			}
			flush(adv)
			open &^= 1 << adv
		}
		for m := madv; m != 0; m &= m - 1 {
			adv := bits.TrailingZeros64(m)
			flush(adv)
			runs[adv] = run{start: e.GetStart(), end: e.GetEnd(), first: e, n: 1}
			open |= 1 << adv
		}
	}
	for m := open; m != 0; m &= m - 1 {
		flush(bits.TrailingZeros64(m))
	}
	return b.Run()
}

// mapVdso re-creates [vvar], [vvar_vclock] and [vdso] where the image had
// them. They must move together: the vdso code finds its data at fixed
// offsets from itself.
func (r *restorer) mapVdso() error {
	var lo, vdso, vdsoEnd uint64
	for _, e := range r.l.mm.GetVmas() {
		if has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
			if lo == 0 || e.GetStart() < lo {
				lo = e.GetStart()
			}
			if has(e, kabi.VMA_AREA_VDSO) {
				vdso, vdsoEnd = e.GetStart(), e.GetEnd()
			}
		}
	}
	if lo == 0 {
		return nil
	}
	ret, err := r.c.leader.Syscall(unix.SYS_ARCH_PRCTL, kabi.ARCH_MAP_VDSO_64, lo)
	if err != nil {
		return err
	}
	if err := inject.Errno(ret); err != nil {
		return fmt.Errorf("arch_prctl(ARCH_MAP_VDSO_64, %#x): %w", lo, err)
	}
	// Check the kernel laid them out as the image has them: the image's
	// vdso, which preflight found to be this kernel's, must be readable
	// where the image had it ([vvar] pages cannot be read from outside).
	// Reading it is cheap; /proc/PID/maps costs the kernel a line per VMA
	// (a tenth of the restore of 10,000 VMAs), so it is read only to say
	// what went wrong.
	if want := r.l.meta.VdsoHash; want != "" && vdsoEnd > vdso && vdsoEnd-vdso <= 1<<20 {
		b := make([]byte, vdsoEnd-vdso)
		if ptrace.ReadMem(r.c.pid, vdso, b) == nil && fmt.Sprintf("%x", sha256.Sum256(b)) == want {
			r.vdso = vdso
			return nil
		}
	}
	maps, err := procfs.MapsPid(r.c.pid)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Kind == procfs.KindVdso {
			if m.Start != vdso {
				return fmt.Errorf("this kernel puts [vdso] at %#x-%#x, the image at %#x: the image comes from a kernel with another vdso layout: %w", m.Start, m.End, vdso, ErrNotSupported)
			}
			r.vdso = vdso
			return nil
		}
	}
	return fmt.Errorf("no [vdso] after ARCH_MAP_VDSO_64")
}

// findSyscall returns the address of a syscall instruction in the new vdso,
// for the injections that follow the removal of the scratch area.
func (r *restorer) findSyscall() (uint64, error) {
	if r.vdso == 0 {
		return 0, fmt.Errorf("image has no [vdso] to inject the last syscalls through: %w", ErrNotSupported)
	}
	b := make([]byte, 2*pageSize)
	if err := ptrace.ReadMem(r.c.pid, r.vdso, b); err != nil {
		return 0, err
	}
	for i := 0; i+1 < len(b); i++ {
		if b[i] == 0x0f && b[i+1] == 0x05 {
			return r.vdso + uint64(i), nil
		}
	}
	return 0, fmt.Errorf("no syscall instruction in [vdso]")
}

// exeIsAlready says whether the process's exe link is the image's exe file.
func (r *restorer) exeIsAlready(exe *fdinfo.FileEntry) bool {
	name := exe.GetReg().GetName()
	if p, ok := r.t.files.GhostPath(exe.GetId()); ok {
		name = p
	}
	var a, b unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/exe", r.c.pid), &a) != nil || unix.Stat(name, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// setMM puts back the mm bounds, auxv and exe link in one PR_SET_MM_MAP.
func (r *restorer) setMM() error {
	c, mm := r.c, r.l.mm
	exe := r.l.files[mm.GetExeFileId()]
	if exe == nil || exe.GetReg() == nil {
		return &image.FormatError{File: r.mmName(), Offset: -1, Err: fmt.Errorf("exe file %d not in files.img: %w", mm.GetExeFileId(), image.ErrImageCorrupt)}
	}
	// A forked child already has the right exe link (its parent's), and
	// the kernel refuses to change it while that file is mapped: leave it.
	exeFd := ^uint32(0)
	if !r.exeIsAlready(exe) {
		fd, err := r.openFile(exe, unix.O_RDONLY)
		if err != nil {
			return fmt.Errorf("exe: %w", err)
		}
		defer c.call(c.leader, "close", unix.SYS_CLOSE, fd)
		exeFd = uint32(fd)
	}
	auxv := make([]byte, 8*len(mm.GetMmSavedAuxv()))
	for i, v := range mm.GetMmSavedAuxv() {
		binary.LittleEndian.PutUint64(auxv[i*8:], v)
	}
	m := kabi.PrctlMmMap{
		StartCode: mm.GetMmStartCode(), EndCode: mm.GetMmEndCode(),
		StartData: mm.GetMmStartData(), EndData: mm.GetMmEndData(),
		StartBrk: mm.GetMmStartBrk(), Brk: mm.GetMmBrk(),
		StartStack: mm.GetMmStartStack(),
		ArgStart:   mm.GetMmArgStart(), ArgEnd: mm.GetMmArgEnd(),
		EnvStart: mm.GetMmEnvStart(), EnvEnd: mm.GetMmEnvEnd(),
		AuxvSize: uint32(len(auxv)), ExeFd: exeFd,
	}
	if len(auxv) > 0 {
		var err error
		if m.Auxv, err = c.arg(auxv); err != nil {
			return err
		}
	}
	addr, err := c.arg(kabi.Bytes(&m))
	if err != nil {
		return err
	}
	if _, err := c.call(c.leader, "prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, kabi.PR_SET_MM_MAP, addr, uint64(len(kabi.Bytes(&m))), 0); err != nil {
		return fmt.Errorf("%w (code %#x-%#x data %#x-%#x brk %#x-%#x stack %#x arg %#x-%#x env %#x-%#x auxv %d bytes exe fd %d)",
			err, m.StartCode, m.EndCode, m.StartData, m.EndData, m.StartBrk, m.Brk, m.StartStack, m.ArgStart, m.ArgEnd, m.EnvStart, m.EnvEnd, m.AuxvSize, int32(m.ExeFd))
	}
	if mm.GetDumpable() != 1 && mm.Dumpable != nil {
		c.call(c.leader, "prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(mm.GetDumpable()))
	}
	if mm.GetThpDisabled() {
		if _, err := c.call(c.leader, "prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

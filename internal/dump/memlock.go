package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Memory locks. A VMA's own lock shows in smaps ("lo", and "lf" with it for
// mlock2(MLOCK_ONFAULT) or mlockall(MCL_ONFAULT)): the image says "lo" as
// CRIU does, with MAP_LOCKED in the entry's flags, and cryo-meta.json lists
// the VMAs locked on fault, which CRIU's vma_entry cannot say.
//
// mlockall(MCL_FUTURE) is not a VMA's: it is the mm's def_flags, which the
// kernel ORs into every VMA made later, and nothing in /proc shows it. So
// the process is asked by deed: one page is mapped in it and looked at. If
// the kernel counted it in VmLck, def_flags has VM_LOCKED; if the mmap also
// faulted its page in, VM_LOCKONFAULT is not set. The page is shared
// anonymous memory, which never merges with a neighbour, and is unmapped
// again at once; were cryo killed in between, the process would run on with
// one spare page mapped, nothing else changed (2 kills of the dump's worker
// in 300 did hit that instant). So the probe runs only for a process that
// has memory locked (VmLck): mlockall(MCL_FUTURE) locks every mapping made
// after it, and a process that holds none has made none since, or never
// asked — the one it cannot tell apart is a process that called
// mlockall(MCL_FUTURE) alone and has not mapped anything since; it comes
// back without it.

// mlockFuture returns the mlockall flags that the process's mm keeps for
// its future mappings: 0, MCL_FUTURE, or MCL_FUTURE|MCL_ONFAULT.
func (p *process) mlockFuture() (int, error) {
	l := p.threads[0]
	lockedKB := func() (uint64, error) {
		st, err := procfs.StatusPid(p.pid)
		if err != nil {
			return 0, err
		}
		v, _ := st.KB("VmLck")
		return v, nil
	}
	before, err := lockedKB()
	if err != nil || before == 0 {
		return 0, err
	}
	_, addr, err := l.call("mmap (a page to see whether mlockall(MCL_FUTURE) locks it)", 0, unix.SYS_MMAP, func(uint64) []uint64 {
		return []uint64{0, pageSize, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_SHARED | unix.MAP_ANONYMOUS, ^uint64(0), 0}
	})
	if errors.Is(err, unix.EAGAIN) {
		// Only a VM_LOCKED mapping over RLIMIT_MEMLOCK fails so.
		return 0, fmt.Errorf("process %d: mlockall(MCL_FUTURE) holds and RLIMIT_MEMLOCK is used up, so whether it was MCL_ONFAULT cannot be told: %w", p.pid, ErrNotSupported)
	}
	if err != nil {
		return 0, err
	}
	after, err := lockedKB()
	var present bool
	if err == nil {
		present, err = pagePresent(p.pid, addr)
	}
	if _, _, uerr := l.call("munmap (the page mapped to see mlockall(MCL_FUTURE))", 0, unix.SYS_MUNMAP, func(uint64) []uint64 { return []uint64{addr, pageSize} }); uerr != nil {
		return 0, uerr
	}
	if err != nil {
		return 0, err
	}
	switch {
	case after <= before:
		return 0, nil
	case present:
		return unix.MCL_FUTURE, nil
	}
	return unix.MCL_FUTURE | unix.MCL_ONFAULT, nil
}

// refuseMergeAny fails the dump of a process that asked KSM to merge all
// its memory (prctl PR_SET_MEMORY_MERGE, 6.4): the mm flag makes every
// later VMA mergeable, and setting it again marks every VMA there is, so
// the VMAs the program made unmergeable since would not come back so.
func (p *process) refuseMergeAny() error {
	_, v, err := p.threads[0].call("prctl(PR_GET_MEMORY_MERGE)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_MEMORY_MERGE} })
	if errors.Is(err, unix.EINVAL) {
		return nil // no KSM in this kernel: nothing was asked
	}
	if err != nil {
		return err
	}
	if v != 0 {
		return fmt.Errorf("process %d asked KSM to merge all its memory (prctl PR_SET_MEMORY_MERGE): %w", p.pid, ErrNotSupported)
	}
	return nil
}

// pagePresent reads the pagemap entry of the page at addr.
func pagePresent(pid int, addr uint64) (bool, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/pageSize*8)); err != nil {
		return false, fmt.Errorf("pagemap of %d at %#x: %w", pid, addr, err)
	}
	return binary.LittleEndian.Uint64(b[:])&kabi.PM_PRESENT != 0, nil
}

// lockFlags sets the image's view of a VMA's lock: MAP_LOCKED in its
// flags, and whether it locks on fault (returned, for cryo-meta.json).
func lockFlags(m procfs.Mapping, flags *uint32) (onFault bool) {
	if !m.VmFlags.Has(procfs.VmLocked) {
		return false
	}
	*flags |= unix.MAP_LOCKED
	return m.VmFlags.Has(procfs.VmLockOnFault)
}

// refuseMapping fails the dump, naming the mapping, for memory whose state
// a restore would get wrong.
func (p *process) refuseMapping(m procfs.Mapping) error {
	why := ""
	switch {
	case m.VmFlags.Has(procfs.VmUffdMissing) || m.VmFlags.Has(procfs.VmUffdWP) || m.VmFlags.Has(procfs.VmUffdMinor):
		// The faults would go to a userfaultfd that restore cannot make
		// again with the same registrations and waiting faults.
		why = "registered with userfaultfd (" + flagWords(m.VmFlags&(procfs.VmUffdMissing|procfs.VmUffdWP|procfs.VmUffdMinor)) + ")"
	case strings.HasPrefix(m.Path, "/[aio]"):
		why = "an AIO ring (io_setup)"
	case m.RawPath == "anon_inode:[io_uring]":
		why = "an io_uring ring"
	case m.Kind == procfs.KindFile && strings.HasPrefix(m.Path, "/dev/") && m.Path != "/dev/zero":
		var st unix.Stat_t
		name := fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, m.Start, m.End)
		if unix.Stat(name, &st) == nil && (st.Mode&unix.S_IFMT == unix.S_IFCHR || st.Mode&unix.S_IFMT == unix.S_IFBLK) {
			why = fmt.Sprintf("a mapping of device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("mapping %#x-%#x (%s) of pid %d is %s: %w", m.Start, m.End, m.RawPath, p.pid, why, ErrNotSupported)
}

func flagWords(f procfs.VmFlags) string { return strings.Join(f.Words(), ", ") }

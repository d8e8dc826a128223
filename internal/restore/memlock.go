package restore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Memory locks (see internal/dump/memlock.go for what the image says).
// Every VMA is mapped unlocked and filled first, then locked where the image
// has MAP_LOCKED: mlock faults in what the program had faulted in when it
// locked (for a VMA locked on fault, mlock2(MLOCK_ONFAULT) locks only the
// pages that are in). mlockall(MCL_FUTURE) comes last of all (lastCalls),
// once restore maps nothing more: every mapping made after it is locked.

// lockable says whether an image VMA's lock is one restore puts back: the
// vdso's is (mlockall locks it), [vvar] and [vsyscall] are never locked.
func lockable(e *vma.VmaEntry) bool {
	return e.GetFlags()&unix.MAP_LOCKED != 0 && !has(e, kabi.VMA_AREA_VSYSCALL) && !has(e, kabi.VMA_AREA_VVAR)
}

// preflightLocks refuses, before anything exists, a process whose locked
// memory this restore cannot lock: without CAP_IPC_LOCK the stub may lock
// only up to cryo's own RLIMIT_MEMLOCK.
func (r *restorer) preflightLocks() error {
	for _, p := range r.l.procs {
		if p.zombie || p.mm == nil {
			continue
		}
		var n uint64
		for _, e := range p.mm.GetVmas() {
			if lockable(e) {
				n += e.GetEnd() - e.GetStart()
			}
		}
		if n == 0 {
			continue
		}
		st, err := procfs.StatusPid(os.Getpid())
		if err != nil {
			return err
		}
		if st.CapEff&(1<<unix.CAP_IPC_LOCK) != 0 {
			return nil
		}
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			return err
		}
		if n > lim.Cur {
			return fmt.Errorf("process %d had %d KiB of memory locked (mlock, VmLck); this restore may lock %d KiB (RLIMIT_MEMLOCK) and has no CAP_IPC_LOCK: %w",
				p.tree.GetPid(), n>>10, lim.Cur>>10, ErrNotSupported)
		}
	}
	return nil
}

// lockAll locks the VMAs the image has locked, adjacent ones of the same
// kind in one call.
func (r *restorer) lockAll() error {
	onFault := map[uint64]bool{}
	for _, a := range r.l.meta.LockOnFault[r.c.pid] {
		onFault[a] = true
	}
	b := r.c.batch()
	var run struct {
		start, end uint64
		onFault    bool
		none       bool // PROT_NONE: nothing to fault in
		first      *vma.VmaEntry
	}
	var noAccess []inject.Step
	flush := func() {
		if run.end == 0 {
			return
		}
		start, end, first, of := run.start, run.end, run.first, run.onFault
		name := "mlock"
		var step inject.Step
		if of {
			name = "mlock2(MLOCK_ONFAULT)"
			step = b.Add(name, unix.SYS_MLOCK2, start, end-start, unix.MLOCK_ONFAULT)
		} else {
			step = b.Add(name, unix.SYS_MLOCK, start, end-start)
		}
		if run.none {
			// mlock locks a PROT_NONE VMA, then fails to fault it in
			// (ENOMEM), as it did for the program.
			noAccess = append(noAccess, step.Tolerate())
		}
		step.Describe(func() string {
			return fmt.Sprintf("%s of %#x-%#x (from %s; locking needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)", name, start, end, r.describe(first))
		})
		run.end = 0
	}
	n := 0
	for _, e := range r.l.mm.GetVmas() {
		if !lockable(e) {
			flush()
			continue
		}
		n++
		of := onFault[e.GetStart()]
		none := e.GetProt()&(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) == 0
		if run.end == e.GetStart() && run.onFault == of && run.none == none {
			run.end = e.GetEnd()
			continue
		}
		flush()
		run.start, run.end, run.onFault, run.none, run.first = e.GetStart(), e.GetEnd(), of, none, e
	}
	flush()
	if n == 0 {
		return nil
	}
	if err := b.Run(); err != nil {
		return err
	}
	for _, st := range noAccess {
		if _, err := st.Result(); err != nil && !errors.Is(err, unix.ENOMEM) {
			return err
		}
	}
	return nil
}

// lockFuture gives the mm what mlockall(MCL_FUTURE) left in it; mlockall
// without MCL_CURRENT changes no VMA there is.
func (r *restorer) lockFuture() error {
	mcl := r.t.l.metaTask(r.l.tree.GetPid()).Mlockall
	if mcl == 0 {
		return nil
	}
	if mcl&^(unix.MCL_FUTURE|unix.MCL_ONFAULT) != 0 || mcl&unix.MCL_FUTURE == 0 {
		return fmt.Errorf("mlockall flags %#x in %s: %w", mcl, "cryo-meta.json", ErrNotSupported)
	}
	_, err := r.c.call(r.c.leader, "mlockall", unix.SYS_MLOCKALL, uint64(mcl))
	return err
}

// sealAll seals the VMAs the image has sealed (mseal, 6.10), adjacent ones
// in one call. It runs among the last calls, once the children are forked:
// a child inherits its parent's seals, and one whose VMAs differ from its
// parent's could not unmap what it does not have.
func (r *restorer) sealAll() error {
	starts := r.l.meta.Sealed[r.c.pid]
	if len(starts) == 0 {
		return nil
	}
	sealed := map[uint64]bool{}
	for _, a := range starts {
		sealed[a] = true
	}
	// One call a run: the scratch area a batch needs is gone by now.
	var lo, hi uint64
	var err error
	flush := func() {
		if hi > lo && err == nil {
			_, err = r.c.call(r.c.leader, fmt.Sprintf("mseal of %#x-%#x", lo, hi), unix.SYS_MSEAL, lo, hi-lo, 0)
		}
		lo, hi = 0, 0
	}
	n := 0
	for _, e := range r.l.mm.GetVmas() {
		if !sealed[e.GetStart()] {
			flush()
			continue
		}
		n++
		if hi != e.GetStart() {
			flush()
			lo = e.GetStart()
		}
		hi = e.GetEnd()
	}
	flush()
	if n != len(sealed) {
		return fmt.Errorf("cryo-meta.json seals %d VMAs, mm-%d.img has %d of them", len(sealed), r.c.pid, n)
	}
	return err
}

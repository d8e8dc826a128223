package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/xstate"
)

// Options says what to restore and how.
type Options struct {
	// Dir is the image directory.
	Dir string
	// Detached returns as soon as the process runs. The zero value waits
	// for it to exit and reports its status, as criu restore does.
	Detached bool
	// ShellJob re-attaches the image's terminal fds to the terminal of
	// cryo itself (the one on its stdin, stdout or stderr).
	ShellJob bool
	// FileLocks takes the image's file locks again (criu's --file-locks).
	// Without it an image holding any file lock is refused.
	FileLocks bool
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called as pages are written (done, total).
	Progress func(done, total uint64)
	// Notify, if set, is called at the points of a restore that CRIU's
	// action scripts and RPC notifications know, with the root's pid:
	// "pre-restore" (nothing exists yet), "post-restore" and "pre-resume"
	// (the whole tree built, stopped), "post-resume" (it runs). An error
	// from any but post-resume fails the restore and kills the tree; one
	// from post-resume is only reported (Result.NotifyErr).
	Notify func(event string, pid int) error
	// Inherit are files the caller gives for the image's files whose other
	// side was outside the tree, by key (criu's --inherit-fd fd[N]:KEY;
	// files.InheritKey). Restore keeps them open in the tree; the caller
	// keeps its own.
	Inherit map[string]*os.File
	// TCPEstablished restores the image's established TCP connections
	// (criu's --tcp-established); TCPClose restores them aborted (criu's
	// --tcp-close). With neither, an image holding one is refused.
	TCPEstablished, TCPClose bool
	// NetworkLock is how the restored connections are kept from sending
	// or receiving until the tree runs (criu's --network-lock); the zero
	// value is nftables.
	NetworkLock netlock.Method
	// Verify compares, before the tree runs, what the kernel shows of the
	// restored tree with what it showed of the dumped one (cryo-state.json,
	// package procstate), and fails the restore, killing the tree, on any
	// difference. The zero value trusts the restore.
	Verify bool
}

// Result is what a restore reports.
type Result struct {
	Pid int
	// Status is the restored process's exit status (128+signal if killed),
	// set only when Options.Detached is false.
	Status int
	// Took is the time from start until the process ran.
	Took  time.Duration
	Pages uint64
	// NotifyErr is what Notify returned at post-resume, when the tree was
	// already running.
	NotifyErr error
}

// restorer carries one process of the tree through its stages.
type restorer struct {
	opts Options
	log  *slog.Logger
	l    *loaded // this process's view of the image
	t    *treeRestorer
	c    *child
	vdso uint64
	// inherited is how many given files the root holds at 3, 4, ... from
	// its birth (Options.Inherit).
	inherited int
	// seccomp says how the process's seccomp filters go in (seccomp.go);
	// nil if it has none.
	seccomp *seccompPlan
	// held are pending signals of the image queued last (queueHeld).
	held []heldSignal
	// threadsMade: every thread exists (makeThreads).
	threadsMade bool
}

// preflight refuses, before anything starts, images this machine cannot run.
func (r *restorer) preflight() error {
	m := r.l.meta
	var uts unix.Utsname
	unix.Uname(&uts)
	if mach := unix.ByteSliceToString(uts.Machine[:]); m.Machine != "" && m.Machine != mach {
		return fmt.Errorf("image is for %s, this machine is %s: %w", m.Machine, mach, ErrNotSupported)
	}
	if r.l.dir.Foreign() {
		if err := r.checkForeignVdso(); err != nil {
			return err
		}
	}
	if m.VdsoHash != "" {
		own, err := ownVdsoHash()
		if err != nil {
			return err
		}
		if own != m.VdsoHash {
			return fmt.Errorf("image was taken on kernel %s whose vdso differs from this kernel's (%s): restoring across vdso versions: %w",
				m.Kernel, unix.ByteSliceToString(uts.Release[:]), ErrNotSupported)
		}
	}
	if bv := r.usedXFeatures(); bv&^hostXCR0() != 0 {
		return fmt.Errorf("%w: the image's threads use xstate components %#x, this CPU/kernel offers %#x", xstate.ErrCPU, bv, hostXCR0())
	}
	if err := r.needFeatures(); err != nil {
		return err
	}
	for _, p := range r.l.procs {
		if !p.zombie {
			if err := checkJobctl(p); err != nil {
				return err
			}
		}
	}
	if err := r.l.preflightAttrs(); err != nil {
		return err
	}
	if err := r.preflightLocks(); err != nil {
		return err
	}
	if err := r.preflightSession(); err != nil {
		return err
	}
	if r.opts.Detached {
		// The root's parent is cryo restore, which exits at once with -d:
		// the kernel would send each thread its parent-death signal.
		for i, c := range r.l.cores {
			if d := c.GetThreadCore().GetPdeathSig(); d != 0 {
				return fmt.Errorf("thread %d of the root has parent-death signal %d, which the kernel would send it as soon as cryo restore -d exits: restore it without -d: %w",
					r.l.tree.Threads[i], d, ErrNotSupported)
			}
		}
	}
	return r.l.checkPids()
}

// needFeatures asks package feature, as `cryo check` does, for what this
// image needs of the kernel and can be probed in cryo's own process at no
// cost: the exe link and mm fields always, POSIX timer ids when a process
// has timers. The probes that need a stub of their own (clone3 with
// set_tid, rseq) are asked only if their call fails, to say why (see
// birth), rather than paid for on every restore.
func (r *restorer) needFeatures() error {
	if err := feature.MmMap.Check(); err != nil {
		return err
	}
	for _, p := range r.l.procs {
		if p.zombie {
			continue
		}
		if n := len(p.cores[0].GetTc().GetTimers().GetPosix()); n > 0 {
			if err := feature.TimerRestoreIDs.Check(); err != nil {
				return fmt.Errorf("process %d has %d POSIX timers: %w", p.tree.GetPid(), n, err)
			}
		}
	}
	return nil
}

func (r *restorer) usedXFeatures() uint64 {
	var bv uint64
	for _, p := range append([]*loaded{r.l}, r.l.procs...) {
		for _, c := range p.cores {
			bv |= c.GetThreadInfo().GetFpregs().GetXsave().GetXstateBv()
		}
	}
	return bv
}

// buildMemory rebuilds the address space of a born process (stage 3 of the
// package doc). A child is forked from its parent once the parent's memory
// is in, so parent is the restorer it inherited its address space from: the
// VMAs it inherited are kept, with the pages it still shares copy-on-write.
func (r *restorer) buildMemory(parent *restorer) error {
	c := r.c
	stage := time.Now()
	step := func(name string) {
		r.log.Debug("stage done", "pid", c.pid, "stage", name, "took", time.Since(stage))
		stage = time.Now()
	}
	// The stub's stdio is not the process's: start from an empty fd table,
	// but for the files the root inherits (at 3, 4, ...; see
	// files.Restorer.Inherit).
	if r.inherited > 0 {
		if _, err := c.call(c.leader, "close_range", unix.SYS_CLOSE_RANGE, 0, 2, 0); err != nil {
			return err
		}
		if _, err := c.call(c.leader, "close_range", unix.SYS_CLOSE_RANGE, 3+uint64(r.inherited), ^uint64(0)>>32, 0); err != nil {
			return err
		}
		if err := r.t.files.Inherit(r.proc(), 3); err != nil {
			return err
		}
	} else if _, err := c.call(c.leader, "close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	var kept map[uint64]bool
	keptVdso := false
	if parent == nil {
		if err := c.clearAddressSpace(); err != nil {
			return err
		}
	} else {
		var err error
		if kept, keptVdso, err = r.trimInherited(parent); err != nil {
			return err
		}
	}
	step("clear")
	maps, err := r.mapAll(kept)
	if err != nil {
		return err
	}
	step("map")
	filled := map[uint64]bool{}
	pages, err := r.fillPages(maps, filled, r.opts.Progress)
	if err != nil {
		return err
	}
	r.t.pages += pages
	if parent != nil {
		if err := r.zapUninherited(parent, maps); err != nil {
			return err
		}
	}
	if err := r.separateAnon(maps, filled); err != nil {
		return err
	}
	step("pages")
	if err := r.adviseAll(); err != nil {
		return err
	}
	if err := r.protectAccounted(maps, filled); err != nil {
		return err
	}
	step("advise+protect")
	if keptVdso {
		r.vdso = parent.vdso
	} else if err := r.mapVdso(); err != nil {
		return err
	}
	if err := r.setMM(); err != nil {
		return err
	}
	step("vdso+mm")
	if err := r.lockAll(); err != nil {
		return err
	}
	step("mlock")
	return nil
}

// buildRest restores the rest of a process once every process of the tree
// exists (stages 4-5): files, task state, threads.
func (r *restorer) buildRest() error {
	c := r.c
	stage := time.Now()
	step := func(name string) {
		r.log.Debug("stage done", "pid", c.pid, "stage", name, "took", time.Since(stage))
		stage = time.Now()
	}
	if err := r.t.files.RestoreFds(r.proc(), r.l.fds); err != nil {
		return err
	}
	if err := r.restoreFs(); err != nil {
		return err
	}
	if err := r.restoreProcess(); err != nil {
		return err
	}
	step("files+process")
	if err := r.makeThreads(false); err != nil {
		return err
	}
	for i, t := range c.threads {
		if err := r.restoreThread(t, i); err != nil {
			return err
		}
	}
	if err := r.keepTrapIgnored(); err != nil {
		return err
	}
	step("threads")
	return nil
}

// finish removes the scratch area and lets every thread go with its own
// registers, FPU state and signal mask.
func (r *restorer) finish() error {
	c := r.c
	stage := time.Now()
	step := func(name string) {
		r.log.Debug("stage done", "pid", c.pid, "stage", name, "took", time.Since(stage))
		stage = time.Now()
	}
	ip, err := r.findSyscall()
	if err != nil {
		return err
	}
	c.leader.SetSyscallIP(ip, false) // a vdso syscall has no int3 after it
	if _, err := c.call(c.leader, "munmap scratch", unix.SYS_MUNMAP, c.scratch, scratchSize); err != nil {
		return err
	}
	step("munmap")
	if err := r.lastCalls(ip); err != nil {
		return err
	}
	step("last calls")
	for i, t := range c.threads {
		core := r.l.cores[i]
		ti := core.GetThreadInfo()
		regs := ptrace.ResumeRegs(gpregs(ti.GetGpregs()), false)
		if err := t.SetRegs(&regs); err != nil {
			return err
		}
		tmpl := make([]byte, kabi.XstateMaxSize)
		n, err := kabi.GetRegset(t.Tid, kabi.NT_X86_XSTATE, tmpl)
		if err != nil {
			return fmt.Errorf("thread %d: read xstate: %w", t.Tid, err)
		}
		raw, err := xstate.Decode(ti.GetFpregs(), tmpl[:n])
		if err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
		if err := kabi.SetRegset(t.Tid, kabi.NT_X86_XSTATE, raw); err != nil {
			return fmt.Errorf("thread %d: set xstate: %w", t.Tid, err)
		}
		mask := core.GetThreadCore().GetBlkSigset()
		if i == 0 && core.GetThreadCore().BlkSigset == nil {
			mask = core.GetTc().GetBlkSigset()
		}
		if err := kabi.SetSigmask(t.Tid, mask); err != nil {
			return fmt.Errorf("thread %d: signal mask: %w", t.Tid, err)
		}
	}
	step("registers")
	if err := r.setSched(); err != nil {
		return err
	}
	err = r.checkAudit()
	step("sched+audit")
	return err
}

// detach lets every thread of the process run.
func (r *restorer) detach() error {
	var errs []error
	for _, t := range r.c.threads {
		if err := t.Detach(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// session makes the process a session leader if it was one. Other
// processes inherit their session from the process that forks them (see
// treeRestorer.fork); groups are set once all exist (treeRestorer.groups).
// A shell job's root stays in the session of cryo restore, as criu does.
func (r *restorer) session() error {
	te := r.l.tree
	if te.GetSid() != te.GetPid() || (r.opts.ShellJob && r == r.t.rs[0]) {
		return nil
	}
	_, err := r.c.call(r.c.leader, "setsid", unix.SYS_SETSID)
	return err
}

// preflightSession refuses a root whose session or process group was
// another process's, outside the tree, unless the restore is a shell job
// (criu's --shell-job: the root joins those of cryo restore) or they are
// cryo restore's own: the root is forked from cryo and keeps what it
// inherits, so anything else would come back silently different. CRIU
// refuses such a root at the dump; cryo dumps it and restores it where
// its session and group are there.
func (r *restorer) preflightSession() error {
	te := r.l.tree
	pid := te.GetPid()
	if r.opts.ShellJob {
		return nil
	}
	if sid := te.GetSid(); sid != pid {
		own, err := unix.Getsid(0)
		if err != nil {
			return err
		}
		if int(sid) != own {
			return fmt.Errorf("the root process %d was in session %d, led by a process outside the tree; this restore is in session %d: restore it with --shell-job to have it join this one: %w",
				pid, sid, own, ErrNotSupported)
		}
	}
	if pgid := te.GetPgid(); pgid != pid {
		if _, inTree := r.t.byPid[pgid]; !inTree && int(pgid) != unix.Getpgrp() {
			return fmt.Errorf("the root process %d was in process group %d, led by a process outside the tree; this restore is in group %d: restore it with --shell-job to have it join this one: %w",
				pid, pgid, unix.Getpgrp(), ErrNotSupported)
		}
	}
	return nil
}

var ownVdsoHash = func() (string, error) { return vdsoHashOf(os.Getpid()) }

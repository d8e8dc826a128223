package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
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
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called as pages are written (done, total).
	Progress func(done, total uint64)
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
}

// restorer carries one restore through its stages.
type restorer struct {
	opts   Options
	log    *slog.Logger
	l      *loaded
	c      *child
	vdso   uint64
	ghosts *ghosts
	// memfdFds holds the child's fd on each re-created memfd inode.
	memfdFds map[uint32]uint64
	// pipes holds the ends of each pipe made so far, by pipe_id.
	pipes map[uint32]*pipeEnds
	// tempFdBase is above every fd number of the image (see park).
	tempFdBase uint64
}

// Run restores the image in opts.Dir. On failure, whatever was built is
// killed and nothing runs.
func Run(opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	t0 := time.Now()
	l, err := load(opts.Dir)
	if err != nil {
		return nil, err
	}
	r := &restorer{opts: opts, log: opts.Log, l: l}
	for _, fd := range l.fds {
		r.tempFdBase = max(r.tempFdBase, uint64(fd.GetFd())+1)
	}
	if err := r.preflight(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The stub that forks the process is killed right after; as a child
	// subreaper cryo inherits the process, so it can wait for it and, on
	// failure, reap it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	res := &Result{Pid: int(l.tree.GetPid())}
	if err := r.build(res); err != nil {
		if r.c != nil {
			r.c.kill()
		}
		r.ghosts.cleanup()
		return nil, err
	}
	r.ghosts.cleanup()
	res.Took = time.Since(t0)
	r.log.Info("restored", "pid", res.Pid, "took", res.Took)
	if opts.Detached {
		return res, nil
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(res.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("wait for %d: %w", res.Pid, err)
		}
		break
	}
	switch {
	case ws.Exited():
		res.Status = ws.ExitStatus()
	case ws.Signaled():
		res.Status = 128 + int(ws.Signal())
	}
	return res, nil
}

// preflight refuses, before anything starts, images this machine cannot run.
func (r *restorer) preflight() error {
	m := r.l.meta
	var uts unix.Utsname
	unix.Uname(&uts)
	if mach := unix.ByteSliceToString(uts.Machine[:]); m.Machine != "" && m.Machine != mach {
		return fmt.Errorf("image is for %s, this machine is %s: %w", m.Machine, mach, ErrNotSupported)
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
	return r.l.checkPids()
}

func (r *restorer) usedXFeatures() uint64 {
	var bv uint64
	for _, c := range r.l.cores {
		bv |= c.GetThreadInfo().GetFpregs().GetXsave().GetXstateBv()
	}
	return bv
}

// build runs the stages of the package doc.
func (r *restorer) build(res *Result) error {
	l := r.l
	pid := int(l.tree.GetPid())
	var err error
	if r.ghosts, err = prepareGhosts(l); err != nil {
		return err
	}
	var spans [][2]uint64
	for _, e := range l.mm.GetVmas() {
		spans = append(spans, [2]uint64{e.GetStart(), e.GetEnd()})
	}
	base, err := chooseBase(spans)
	if err != nil {
		return err
	}
	if r.c, err = birth(pid, base, r.log); err != nil {
		return err
	}
	c := r.c
	r.log.Debug("process born", "pid", pid, "stub", fmt.Sprintf("%#x", base))
	stage := time.Now()
	step := func(name string) {
		r.log.Debug("stage done", "stage", name, "took", time.Since(stage))
		stage = time.Now()
	}
	defer step("last")
	if err := r.session(); err != nil {
		return err
	}
	// The stub's stdio is not the process's: start from an empty fd table.
	if _, err := c.call(c.leader, "close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	if err := c.clearAddressSpace(); err != nil {
		return err
	}
	if err := r.prepareMemfds(); err != nil {
		return err
	}
	step("session+clear+memfd")
	maps, err := r.mapAll()
	if err != nil {
		return err
	}
	step("map")
	filled := map[uint64]bool{}
	if res.Pages, err = r.fillPages(maps, filled, r.opts.Progress); err != nil {
		return err
	}
	if err := r.protectAccounted(maps, filled); err != nil {
		return err
	}
	step("pages")
	if err := r.adviseAll(); err != nil {
		return err
	}
	if err := r.mapVdso(); err != nil {
		return err
	}
	if err := r.setMM(); err != nil {
		return err
	}
	step("vdso+mm")
	if err := r.restoreFiles(); err != nil {
		return err
	}
	if err := r.restoreProcess(); err != nil {
		return err
	}
	step("files+process")
	if err := r.createThreads(); err != nil {
		return err
	}
	for i, t := range c.threads {
		if err := r.restoreThread(t, i); err != nil {
			return err
		}
	}
	step("threads")
	if err := r.restoreCreds(); err != nil {
		return err
	}
	return r.finish()
}

// finish removes the scratch area and lets every thread go with its own
// registers, FPU state and signal mask.
func (r *restorer) finish() error {
	c := r.c
	ip, err := r.findSyscall()
	if err != nil {
		return err
	}
	c.leader.SyscallIP = ip
	if _, err := c.call(c.leader, "munmap scratch", unix.SYS_MUNMAP, c.scratch, scratchSize); err != nil {
		return err
	}
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
	var errs []error
	for _, t := range c.threads {
		if err := t.Detach(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// session puts the process in the session and group it had, where it
// led them; otherwise it stays in cryo's (as a shell job does).
func (r *restorer) session() error {
	pid := r.l.tree.GetPid()
	switch {
	case r.l.tree.GetSid() == pid && !r.opts.ShellJob:
		_, err := r.c.call(r.c.leader, "setsid", unix.SYS_SETSID)
		return err
	case r.l.tree.GetPgid() == pid:
		_, err := r.c.call(r.c.leader, "setpgid", unix.SYS_SETPGID, 0, 0)
		return err
	}
	return nil
}

var ownVdsoHash = func() (string, error) { return vdsoHashOf(os.Getpid()) }

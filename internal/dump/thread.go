package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// thread is the dump's state for one seized thread. Its injected calls
// take their arguments from an inject.Stack: bytes below its red zone,
// borrowed and put back.
type thread struct {
	t      *inject.Task
	parked bool // in an injected sleep (park.go)

	xsave   []byte
	sigmask uint64
	pending []kabi.Siginfo
	sas     kabi.Stack
	tidAddr uint64
	pdeath  uint64
	rseq    kabi.RseqConfiguration
	robust  [2]uint64 // head, len
	comm    string
	status  *procfs.Status
	stat    *procfs.Stat
	seccomp int
	secbits uint32 // securebits: per thread, and only the thread can tell
	attrs   attrs
	// filters is the thread's seccomp chain, most recent first, and
	// filterIdx where its most recent one is in seccomp.img.
	filters   []filter
	filterIdx uint32
}

// call injects a syscall whose result the kernel writes into out bytes of
// the thread's arena, and returns those bytes. args gets their address.
func (th *thread) call(name string, out int, nr uintptr, args func(scratch uint64) []uint64) ([]byte, uint64, error) {
	var at uint64
	if out > 0 {
		var err error
		if at, err = th.t.Arena().Alloc(out, 0); err != nil {
			return nil, 0, fmt.Errorf("thread %d: %w", th.t.Tid, err)
		}
	}
	ret, err := th.t.Call(name, nr, args(at)...)
	if err != nil {
		return nil, 0, err
	}
	if out == 0 {
		return nil, ret, nil
	}
	b, err := th.t.Arena().Read(at, out)
	if err != nil {
		return nil, 0, err
	}
	return b, ret, nil
}

// putBackScratch restores the stack bytes the injections borrowed.
func (th *thread) putBackScratch() error { return th.t.PutBackArena() }

// requeueCaught queues again the signals the kernel dequeued for the
// thread while cryo had it stopped, SIGSTOP's (stop true) or all others'.
// shared is the process's queue as it was read before the first injection.
// SIGSTOP goes last, after every other call in the process: it cannot be
// blocked, so any call made after it was queued would take it again.
func (th *thread) requeueCaught(pid int, shared []kabi.Siginfo, stop bool) error {
	var errs []error
	var keep []kabi.Siginfo
	for _, si := range th.t.Caught {
		if (si.Signo() == int(unix.SIGSTOP)) != stop {
			keep = append(keep, si)
			continue
		}
		if err := th.requeue(pid, si, th.caughtShared(si, shared)); err != nil {
			errs = append(errs, err)
		}
	}
	th.t.Caught = keep
	return errors.Join(errs...)
}

// caughtShared tells which queue a caught signal si belongs to: one an
// injected call let the thread take (SIGSTOP) goes back to the queue it
// was read in, the process's (shared) if it was there; one the kernel had
// dequeued for the thread before it stopped is the thread's.
func (th *thread) caughtShared(si kabi.Siginfo, shared []kabi.Siginfo) bool {
	return slices.Contains(shared, si) && !slices.Contains(th.pending, si)
}

// release puts back the borrowed stack bytes and the registers, and
// detaches (after requeueCaught).
func (th *thread) release() error {
	var errs []error
	th.t.Caught = nil
	if err := th.putBackScratch(); err != nil {
		errs = append(errs, err)
	}
	if err := th.t.Release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// requeue hands a signal the kernel dequeued while the thread was being
// stopped back to the thread, or to its process if shared, siginfo intact.
func (th *thread) requeue(pid int, si kabi.Siginfo, shared bool) error {
	s, err := th.t.Arena().Put(si[:])
	if err != nil {
		return err
	}
	if shared {
		_, err = th.t.Call("rt_sigqueueinfo", unix.SYS_RT_SIGQUEUEINFO, uint64(pid), uint64(si.Signo()), s)
		return err
	}
	_, err = th.t.Call("rt_tgsigqueueinfo", unix.SYS_RT_TGSIGQUEUEINFO, uint64(pid), uint64(th.t.Tid), uint64(si.Signo()), s)
	return err
}

// collectThread reads what the kernel tells from outside about one thread,
// and asks the thread itself (by injection) for the rest.
func (p *process) collectThread(th *thread) error {
	if err := p.aborted(); err != nil {
		return err
	}
	tid := th.t.Tid
	var err error
	buf := make([]byte, kabi.XstateMaxSize)
	n, err := kabi.GetRegset(tid, kabi.NT_X86_XSTATE, buf)
	if err != nil {
		return fmt.Errorf("thread %d: xstate: %w", tid, err)
	}
	th.xsave = buf[:n]
	if th.sigmask, err = kabi.GetSigmask(tid); err != nil {
		return fmt.Errorf("thread %d: signal mask: %w", tid, err)
	}
	if th.pending, err = peekSignals(tid, false); err != nil {
		return err
	}
	if tid == p.pid {
		// Before the first injection: resuming a thread for one lets
		// it dequeue an unblocked pending signal (held back in Caught),
		// and any thread may take one from the process's queue. A
		// stopped process keeps the signals sent to it pending, so it
		// has such signals more often than not.
		if p.sharedPending, err = peekSignals(tid, true); err != nil {
			return err
		}
	}
	// Signals the kernel dequeued while the thread was being stopped are
	// pending as far as the program can tell.
	th.pending = append(th.pending, th.t.Caught...)
	if th.rseq, err = kabi.GetRseqConfiguration(tid); err != nil {
		return fmt.Errorf("thread %d: rseq: %w", tid, err)
	}
	head, size, err := kabi.GetRobustList(tid)
	if err != nil {
		return fmt.Errorf("thread %d: get_robust_list: %w", tid, err)
	}
	th.robust = [2]uint64{head, size}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", p.pid, tid))
	if err != nil {
		return fmt.Errorf("thread %d: comm: %w", tid, err)
	}
	th.comm = strings.TrimSuffix(string(comm), "\n")
	if th.status, err = procfs.TaskStatusPid(p.pid, tid); err != nil {
		return err
	}
	if th.stat, err = procfs.TaskStatPid(p.pid, tid); err != nil {
		return err
	}
	th.seccomp = th.status.Seccomp
	if th.seccomp != 0 && !p.suspended {
		// Without PTRACE_O_SUSPEND_SECCOMP the thread's own mode judges
		// the calls cryo injects: strict mode kills it for any but read,
		// write, exit and sigreturn, a filter may kill it too.
		return fmt.Errorf("thread %d is in seccomp mode %d, which would judge the calls cryo injects; suspending it (PTRACE_O_SUSPEND_SECCOMP) needs CAP_SYS_ADMIN, and cryo must run without seccomp itself: %w",
			tid, th.seccomp, ErrNotSupported)
	}
	if th.seccomp == 2 {
		if th.filters, err = seccompChain(tid); err != nil {
			return err
		}
	}

	b, _, err := th.call("sigaltstack", 24, unix.SYS_SIGALTSTACK, func(s uint64) []uint64 { return []uint64{0, s} })
	if err != nil {
		return err
	}
	th.sas = kabi.FromBytes[kabi.Stack](b)
	b, _, err = th.call("prctl(PR_GET_TID_ADDRESS)", 8, unix.SYS_PRCTL, func(s uint64) []uint64 { return []uint64{unix.PR_GET_TID_ADDRESS, s} })
	if err != nil {
		return err
	}
	th.tidAddr = binary.LittleEndian.Uint64(b)
	b, _, err = th.call("prctl(PR_GET_PDEATHSIG)", 4, unix.SYS_PRCTL, func(s uint64) []uint64 { return []uint64{unix.PR_GET_PDEATHSIG, s} })
	if err != nil {
		return err
	}
	th.pdeath = uint64(binary.LittleEndian.Uint32(b))
	_, v, err := th.call("prctl(PR_GET_SECUREBITS)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_SECUREBITS} })
	if err != nil {
		return err
	}
	th.secbits = uint32(v)
	return p.collectAttrs(th)
}

// peekSignals copies a queue of pending signals without dequeuing them.
func peekSignals(tid int, shared bool) ([]kabi.Siginfo, error) {
	var out []kabi.Siginfo
	buf := make([]kabi.Siginfo, 32)
	for {
		n, err := kabi.PeekSiginfo(tid, uint64(len(out)), shared, buf)
		if err != nil {
			return nil, fmt.Errorf("thread %d: pending signals: %w", tid, err)
		}
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out, nil
		}
		if len(out) > 1<<16 {
			return nil, fmt.Errorf("thread %d: more than %d pending signals", tid, 1<<16)
		}
	}
}

// procInfo is what the leader is asked on behalf of the whole process.
type procInfo struct {
	sigactions [64]kabi.Sigaction
	brk        uint64
	itimers    [3]kabi.Itimerval
	timers     []posixTimer
	subreaper  bool
	dumpable   int
	thpOff     bool
	shared     []kabi.Siginfo
}

type posixTimer struct {
	id        int
	clock     int
	signo     int
	notify    int
	notifyTid int
	sival     uint64
	spec      kabi.Itimerspec
	overrun   int
}

func (p *process) collectProcess() (*procInfo, error) {
	l := p.threads[0]
	pi := &procInfo{}
	var err error
	pi.shared = p.sharedPending
	for sig := 1; sig <= 64; sig++ {
		bit := uint64(1) << uint(sig-1)
		switch {
		case sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP):
			continue
		case (p.status.SigIgn|p.status.SigCgt)&bit == 0:
			continue // SIG_DFL: flags and mask of a default action never matter
		}
		b, _, err := l.call("rt_sigaction", 32, unix.SYS_RT_SIGACTION, func(s uint64) []uint64 { return []uint64{uint64(sig), 0, s, 8} })
		if err != nil {
			return nil, err
		}
		pi.sigactions[sig-1] = kabi.FromBytes[kabi.Sigaction](b)
	}
	if _, pi.brk, err = l.call("brk", 0, unix.SYS_BRK, func(uint64) []uint64 { return []uint64{0} }); err != nil {
		return nil, err
	}
	for which := range 3 {
		b, _, err := l.call("getitimer", 32, unix.SYS_GETITIMER, func(s uint64) []uint64 { return []uint64{uint64(which), s} })
		if err != nil {
			return nil, err
		}
		pi.itimers[which] = kabi.FromBytes[kabi.Itimerval](b)
	}
	b, _, err := l.call("prctl(PR_GET_CHILD_SUBREAPER)", 4, unix.SYS_PRCTL, func(s uint64) []uint64 { return []uint64{unix.PR_GET_CHILD_SUBREAPER, s} })
	if err != nil {
		return nil, err
	}
	pi.subreaper = binary.LittleEndian.Uint32(b) != 0
	if _, v, err := l.call("prctl(PR_GET_DUMPABLE)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_DUMPABLE} }); err != nil {
		return nil, err
	} else {
		pi.dumpable = int(v)
	}
	if _, v, err := l.call("prctl(PR_GET_THP_DISABLE)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_THP_DISABLE} }); err != nil {
		return nil, err
	} else {
		pi.thpOff = v != 0
	}
	pts, err := procfs.TimersPid(p.pid)
	if err != nil {
		return nil, err
	}
	timers := make([]posixTimer, len(pts))
	for i := range pts {
		timers[i] = posixTimer{
			id: int(pts[i].ID), clock: int(pts[i].ClockID), signo: pts[i].Signal,
			notify: pts[i].SigevNotify(), notifyTid: pts[i].Target, sival: pts[i].SigValue,
		}
	}
	for i := range timers {
		tm := &timers[i]
		b, _, err := l.call("timer_gettime", 32, unix.SYS_TIMER_GETTIME, func(s uint64) []uint64 { return []uint64{uint64(tm.id), s} })
		if err != nil {
			return nil, err
		}
		tm.spec = kabi.FromBytes[kabi.Itimerspec](b)
		if _, v, err := l.call("timer_getoverrun", 0, unix.SYS_TIMER_GETOVERRUN, func(uint64) []uint64 { return []uint64{uint64(tm.id)} }); err == nil {
			tm.overrun = int(v)
		}
	}
	pi.timers = timers
	return pi, nil
}

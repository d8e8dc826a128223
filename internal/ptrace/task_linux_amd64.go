package ptrace

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// ErrGone reports that a task exited while cryo was working on it.
var ErrGone = errors.New("task exited")

// StopTimeout bounds every wait for a task to reach a stop. A task that does
// not stop in this time is stuck in the kernel (D state, NFS, a frozen
// cgroup): cryo gives up rather than hang.
var StopTimeout = 10 * time.Second

// Task is a seized thread, stopped and under cryo's control.
type Task struct {
	Tid int
	// Regs are the registers the task had when it stopped: what it will get
	// back when released.
	Regs unix.PtraceRegs
	// Caught holds signals that arrived while the task was being stopped. The
	// kernel had already dequeued them: they must be queued again (on release,
	// or in the image as pending signals).
	Caught []kabi.Siginfo
	// GroupStopped is set when the task was in a group stop (SIGSTOP,
	// SIGTSTP, SIGTTIN, SIGTTOU) when seized, and StopSignal is the signal
	// that stopped its group: the kernel reports it in the PTRACE_EVENT_STOP
	// of a seized task instead of SIGTRAP.
	GroupStopped bool
	StopSignal   unix.Signal
	// Deliver is a stop signal that RunToTrap and RunSyscall let through
	// to the kernel instead of suppressing it (0: none). Restore sets it to
	// put a restored process in a group stop: a thread that takes part in
	// the stop reports a PTRACE_EVENT_STOP with the signal, which sets
	// GroupStopped and StopSignal, and runs on with the injection.
	Deliver unix.Signal
	// QuietSignals blocks every signal for the instants of each injected
	// syscall (RunSyscall), and puts the task's own mask back after it:
	// resumed for a call, a task would otherwise dequeue a pending signal
	// it does not block, which then has to be held back (Caught) and
	// queued again, by another call that dequeues the next one. Dump sets
	// it; only SIGKILL and SIGSTOP, which cannot be blocked, still come.
	QuietSignals bool

	dirty   bool   // registers were changed by an injection
	ownMask uint64 // the task's signal mask, while QuietSignals blocks all
	masked  bool
}

// Seize attaches to tid and waits until it is stopped.
func Seize(tid int, opts int) (*Task, error) {
	if err := kabi.Seize(tid, opts); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("seize %d: %w", tid, ErrGone)
		}
		return nil, fmt.Errorf("seize %d: %w", tid, err)
	}
	t := &Task{Tid: tid}
	if err := kabi.Interrupt(tid); err != nil {
		kabi.Detach(tid, 0)
		return nil, fmt.Errorf("interrupt %d: %w", tid, err)
	}
	if err := t.waitEventStop(); err != nil {
		kabi.Detach(tid, 0)
		return nil, err
	}
	if err := kabi.GetRegs(tid, &t.Regs); err != nil {
		kabi.Detach(tid, 0)
		return nil, fmt.Errorf("read registers of %d: %w", tid, err)
	}
	return t, nil
}

// Attached wraps a task that the kernel attached automatically (a child or
// thread created by an injected clone with PTRACE_O_TRACEFORK/TRACECLONE) and
// waits for its first stop.
func Attached(tid int) (*Task, error) {
	t := &Task{Tid: tid}
	if err := t.waitEventStop(); err != nil {
		return nil, err
	}
	if err := kabi.GetRegs(tid, &t.Regs); err != nil {
		return nil, fmt.Errorf("read registers of %d: %w", tid, err)
	}
	return t, nil
}

// waitEventStop waits for the PTRACE_EVENT_STOP that PTRACE_INTERRUPT (or an
// automatic attach) produces. Signals that arrive first show up as
// signal-delivery stops: they are recorded in Caught and suppressed.
func (t *Task) waitEventStop() error {
	for {
		ws, err := wait(t.Tid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("task %d: %w", t.Tid, ErrGone)
		}
		sig := ws.StopSignal()
		if event(ws) == kabi.PTRACE_EVENT_STOP {
			if sig != unix.SIGTRAP {
				// Group stop: the process had been stopped by SIGSTOP & co.
				t.GroupStopped = true
				t.StopSignal = sig
			}
			return nil
		}
		if event(ws) != 0 {
			// Some other event (exec, exit...): let it go on to the stop.
			if err := kabi.Cont(t.Tid, 0); err != nil {
				return fmt.Errorf("continue %d: %w", t.Tid, err)
			}
			continue
		}
		si, err := kabi.GetSiginfo(t.Tid)
		if err != nil {
			return fmt.Errorf("siginfo of %d: %w", t.Tid, err)
		}
		t.Caught = append(t.Caught, si)
		if err := kabi.Cont(t.Tid, 0); err != nil {
			return fmt.Errorf("continue %d: %w", t.Tid, err)
		}
	}
}

// event returns the PTRACE_EVENT_* of a ptrace-stop (0 for a signal-delivery
// or syscall stop). It is bits 16-23 of the wait status whatever the stop
// signal: x/sys's TrapCause reports it only alongside SIGTRAP, which hides
// the PTRACE_EVENT_STOP of a group-stop (reported with the stop signal).
func event(ws unix.WaitStatus) int { return int(ws>>16) & 0xff }

// wait waits for a state change of tid, bounded by StopTimeout.
func wait(tid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	deadline := time.Now().Add(StopTimeout)
	sleep := 20 * time.Microsecond
	for spins := 0; ; spins++ {
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				return ws, fmt.Errorf("task %d: %w", tid, ErrGone)
			}
			return ws, fmt.Errorf("wait for %d: %w", tid, err)
		}
		if pid == tid {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("task %d did not stop within %v", tid, StopTimeout)
		}
		// A stop usually comes within microseconds: yield the CPU a few
		// times before sleeping, which costs a timer slack each time.
		if spins < 200 {
			kabi.SchedYield()
			continue
		}
		time.Sleep(sleep)
		if sleep < time.Millisecond {
			sleep *= 2
		}
	}
}

// RunToTrap resumes the stopped task from regs and waits until it executes
// the int3 at trap; it returns the registers the task has there. This is
// package inject's primitive: every injection (a syscall, a batch of them)
// is code cryo placed in the task that ends on that int3. Nothing else may
// resume a task with registers that are not its own.
//
// Stops that come first are handled as the kernel forces: a fork or clone
// event (PTRACE_O_TRACEFORK/TRACECLONE: the new task reports to its own
// wait) and group-stop events are passed; a signal-delivery stop records
// the signal in Caught and suppresses it (resuming with signal 0), so no
// handler of the program's runs on injected registers. A syscall the
// signal interrupted then restarts by itself: with no handler to run, the
// kernel rewinds rip to the syscall instruction for -ERESTART* results
// (arch/x86/kernel/signal.c, arch_do_signal_or_restart). A SIGTRAP counts
// as the trap only when rip is just past it, so one sent by kill(2) is
// taken for what it is.
func (t *Task) RunToTrap(regs *unix.PtraceRegs, trap uint64) (unix.PtraceRegs, error) {
	var out unix.PtraceRegs
	if err := kabi.SetRegs(t.Tid, regs); err != nil {
		return out, fmt.Errorf("set registers of %d: %w", t.Tid, err)
	}
	t.dirty = true
	deliver := 0
	for {
		if err := kabi.Cont(t.Tid, deliver); err != nil {
			return out, fmt.Errorf("continue %d: %w", t.Tid, err)
		}
		deliver = 0
		ws, err := wait(t.Tid)
		if err != nil {
			return out, err
		}
		if !ws.Stopped() {
			return out, fmt.Errorf("task %d during injection: %w", t.Tid, ErrGone)
		}
		if event(ws) != 0 {
			t.sawEvent(ws)
			continue
		}
		if ws.StopSignal() == unix.SIGTRAP {
			if err := kabi.GetRegs(t.Tid, &out); err != nil {
				return out, fmt.Errorf("read registers of %d: %w", t.Tid, err)
			}
			if out.Rip == trap+1 {
				return out, nil // resuming from here suppresses the int3's SIGTRAP
			}
		}
		if deliver, err = t.caught(ws); err != nil {
			return out, err
		}
	}
}

// sawEvent notes a group stop the task took part in (see Deliver).
func (t *Task) sawEvent(ws unix.WaitStatus) {
	if event(ws) == kabi.PTRACE_EVENT_STOP && t.Deliver != 0 && ws.StopSignal() == t.Deliver {
		t.GroupStopped, t.StopSignal = true, t.Deliver
	}
}

// caught handles a signal-delivery stop met during an injection: the
// signal is recorded in Caught and suppressed, or, if it is Deliver, let
// through. It returns the signal to resume with.
//
// A fault of the task's own (SIGSEGV, SIGBUS, SIGILL, SIGFPE raised by the
// kernel for an instruction, not sent) is an error: the injected code
// cannot go on, and suppressing it would run the faulting instruction
// again, forever.
func (t *Task) caught(ws unix.WaitStatus) (int, error) {
	if t.Deliver != 0 && ws.StopSignal() == t.Deliver {
		return int(t.Deliver), nil
	}
	si, err := kabi.GetSiginfo(t.Tid)
	if err != nil {
		return 0, nil
	}
	switch unix.Signal(si.Signo()) {
	case unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE:
		if si.Code() > 0 { // SI_KERNEL and the fault codes; sent signals have <= 0
			var regs unix.PtraceRegs
			_ = kabi.GetRegs(t.Tid, &regs)
			return 0, fmt.Errorf("task %d faulted during an injected call: %s (code %d) at rip %#x", t.Tid, unix.SignalName(unix.Signal(si.Signo())), si.Code(), regs.Rip)
		}
	}
	t.Caught = append(t.Caught, si)
	return 0, nil
}

// RunSyscall resumes the stopped task from regs, whose rip points at a
// syscall instruction, with PTRACE_SYSCALL through that syscall's entry
// and exit stops, and returns the registers at the exit stop (rax holds
// the result). It is RunToTrap for code with no int3 after the syscall:
// dump injects through [vdso], which it may not write. Events and signals
// that come between are handled as in RunToTrap.
func (t *Task) RunSyscall(regs *unix.PtraceRegs) (out unix.PtraceRegs, err error) {
	if err := t.StartSyscall(regs, false); err != nil {
		return out, err
	}
	return t.finishSyscall(true)
}

// StartSyscall is the first half of RunSyscall: it resumes the task from
// regs to the entry stop of the syscall, and then, if enter, on into the
// syscall, and returns while the task is in it (a call that blocks: see
// FinishSyscall). Signals stay blocked until the call ends if QuietSignals.
func (t *Task) StartSyscall(regs *unix.PtraceRegs, enter bool) error {
	if t.QuietSignals {
		mask, err := kabi.GetSigmask(t.Tid)
		if err != nil {
			return fmt.Errorf("signal mask of %d: %w", t.Tid, err)
		}
		if err := kabi.SetSigmask(t.Tid, ^uint64(0)); err != nil {
			return fmt.Errorf("block signals of %d: %w", t.Tid, err)
		}
		t.ownMask, t.masked = mask, true
	}
	if err := kabi.SetRegs(t.Tid, regs); err != nil {
		return errors.Join(fmt.Errorf("set registers of %d: %w", t.Tid, err), t.unmask())
	}
	t.dirty = true
	if err := t.syscallStop(true); err != nil {
		return errors.Join(err, t.unmask())
	}
	if enter {
		if err := kabi.SyscallStep(t.Tid, 0); err != nil {
			return errors.Join(fmt.Errorf("step %d: %w", t.Tid, err), t.unmask())
		}
	}
	return nil
}

// FinishSyscall ends a syscall that StartSyscall entered: PTRACE_INTERRUPT
// makes a blocking call return (the syscall's exit stop then clears the
// interrupt's pending stop), or the call ended by itself and the task
// waits at its exit stop. It returns the registers there.
func (t *Task) FinishSyscall() (unix.PtraceRegs, error) {
	if err := kabi.Interrupt(t.Tid); err != nil {
		return unix.PtraceRegs{}, errors.Join(fmt.Errorf("interrupt %d: %w", t.Tid, err), t.unmask())
	}
	return t.finishSyscall(false)
}

// finishSyscall waits for the exit stop of the syscall the task is in
// (resuming it first if resume), then gives the task its own signal mask
// back and reads the registers.
func (t *Task) finishSyscall(resume bool) (out unix.PtraceRegs, err error) {
	err = t.syscallStop(resume)
	if err = errors.Join(err, t.unmask()); err != nil {
		return out, err
	}
	if err := kabi.GetRegs(t.Tid, &out); err != nil {
		return out, fmt.Errorf("read registers of %d: %w", t.Tid, err)
	}
	return out, nil
}

// syscallStop waits for the task's next syscall stop, resuming it first
// if resume; the stops that come before it (events, signals) are handled
// as in RunToTrap.
func (t *Task) syscallStop(resume bool) error {
	deliver := 0
	for {
		if resume {
			if err := kabi.SyscallStep(t.Tid, deliver); err != nil {
				return fmt.Errorf("step %d: %w", t.Tid, err)
			}
		}
		resume, deliver = true, 0
		ws, err := wait(t.Tid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("task %d during an injected syscall: %w", t.Tid, ErrGone)
		}
		switch {
		case ws.StopSignal() == unix.SIGTRAP|0x80:
			return nil
		case event(ws) != 0:
			t.sawEvent(ws)
		default:
			if deliver, err = t.caught(ws); err != nil {
				return err
			}
		}
	}
}

// unmask gives the task back the signal mask StartSyscall saved.
func (t *Task) unmask() error {
	if !t.masked {
		return nil
	}
	t.masked = false
	if err := kabi.SetSigmask(t.Tid, t.ownMask); err != nil {
		return fmt.Errorf("restore signal mask of %d: %w", t.Tid, err)
	}
	return nil
}

// PutBackRegs gives the task its own registers again, in the form that
// resumes it correctly from where it was stopped (see ResumeRegs): if cryo
// dies after this, the kernel detaches the task and it carries on as if it
// had never been stopped.
func (t *Task) PutBackRegs() error {
	r := ResumeRegs(t.Regs, true)
	if err := kabi.SetRegs(t.Tid, &r); err != nil {
		return fmt.Errorf("restore registers of %d: %w", t.Tid, err)
	}
	return nil
}

// ResumeRegs turns registers saved while a task stood in a syscall that the
// kernel means to restart into registers that restart it without the kernel's
// help: after injections, the restart logic of the stop is no longer the
// kernel's to run. restartBlock says whether -ERESTART_RESTARTBLOCK may use
// the kernel's saved restart block (only on the very task that was stopped);
// otherwise the syscall is simply issued again with its original arguments.
func ResumeRegs(r unix.PtraceRegs, restartBlock bool) unix.PtraceRegs {
	if int64(r.Orig_rax) >= 0 && kabi.IsRestart(r.Rax) {
		if int64(r.Rax) == -kabi.ERESTART_RESTARTBLOCK && restartBlock {
			r.Rax = unix.SYS_RESTART_SYSCALL
		} else {
			r.Rax = r.Orig_rax
		}
		r.Rip -= 2
	}
	r.Orig_rax = ^uint64(0)
	return r
}

// Release puts the task's registers back (if injection changed them) and
// detaches.
func (t *Task) Release() error {
	var errs []error
	if t.dirty || len(t.Caught) > 0 {
		r := ResumeRegs(t.Regs, true)
		if err := kabi.SetRegs(t.Tid, &r); err != nil {
			errs = append(errs, fmt.Errorf("restore registers of %d: %w", t.Tid, err))
		}
	}
	// Signals caught in signal-delivery stops were dequeued by the kernel:
	// the caller must queue them again, siginfo intact, before releasing
	// (dump does, with rt_tgsigqueueinfo). Detach's own signal argument is
	// ignored outside a signal-delivery stop, so it cannot do this.
	if err := kabi.Detach(t.Tid, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("detach %d: %w", t.Tid, err))
	}
	return errors.Join(errs...)
}

// Detach lets the task go without touching its registers (used on tasks
// that are about to be killed, or restored ones whose registers are set).
func (t *Task) Detach() error {
	if err := kabi.Detach(t.Tid, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("detach %d: %w", t.Tid, err)
	}
	return nil
}

// SetRegs sets the registers the task will run with.
func (t *Task) SetRegs(r *unix.PtraceRegs) error {
	if err := kabi.SetRegs(t.Tid, r); err != nil {
		return fmt.Errorf("set registers of %d: %w", t.Tid, err)
	}
	return nil
}

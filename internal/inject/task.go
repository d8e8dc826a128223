package inject

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// Task is a stopped thread that cryo runs syscalls in. It is a seized
// ptrace.Task (whose fields and methods it has) with where to inject from
// and where the arguments go.
type Task struct {
	*ptrace.Task
	ip   uint64 // a syscall instruction the task can execute
	trap bool   // an int3 follows the instruction at ip: one stop per call
	// borrowed: the task goes back to running its program once cryo is
	// done (or dead), so its own registers are put back after every call.
	borrowed bool
	stack    *Stack
	scratch  *Scratch
	// tramp is the return trampoline a borrowed task injects through
	// (tramp_amd64.go), 0 for none.
	tramp uint64
}

// Borrowed returns the injection view of a thread of process pid that cryo
// dumps. Its registers are set for an injected call only for the instants
// of that call, and put back, in a form that resumes it correctly, as soon
// as the call returns: if cryo dies, the kernel detaches the thread, which
// carries on as if it had never been stopped. Its arena is a Stack below
// its red zone. It has no syscall instruction until SetSyscallIP.
func Borrowed(t *ptrace.Task, pid int) *Task {
	return &Task{Task: t, borrowed: true, stack: NewStack(pid, t.Regs.Rsp)}
}

// Built returns the injection view of a thread that cryo builds (a restore)
// or probes (a stub), seized with PTRACE_O_EXITKILL so that it dies with
// cryo: its registers are not put back between calls. It injects through
// the syscall; int3 at the start of s, and its arguments live in s, which
// the threads of one process share.
func Built(t *ptrace.Task, s *Scratch) *Task {
	return &Task{Task: t, ip: s.addr + callCode, trap: true, scratch: s}
}

// SetSyscallIP makes the task inject through the syscall instruction at
// ip; trap says whether an int3 follows it (one stop per call) or not (two
// syscall stops, as through [vdso], which cryo may not write). A signal
// the task has pending and unblocked stays pending across a call made
// without trap, to be delivered when the task is let go: restore relies on
// that to kill a zombie of the image with its own signal.
func (t *Task) SetSyscallIP(ip uint64, trap bool) { t.ip, t.trap = ip, trap }

// SyscallIP returns the address of the syscall instruction in use.
func (t *Task) SyscallIP() uint64 { return t.ip }

// Arena returns where the task's call arguments go (nil for a Task not
// made by Borrowed or Built).
func (t *Task) Arena() Arena {
	switch {
	case t.stack != nil:
		return t.stack
	case t.scratch != nil:
		return t.scratch
	}
	return nil
}

// PutBackArena puts back the stack bytes a borrowed task lent (see Stack);
// a built task has nothing to put back.
func (t *Task) PutBackArena() error {
	if t.stack == nil {
		return nil
	}
	return t.stack.PutBack()
}

// Syscall runs syscall nr with args inside the stopped task and returns the
// kernel's raw result (a negative errno on failure). Unused arguments are
// zero, not whatever the thread had: some syscalls (prctl) insist on it.
// orig_rax is -1 so that the kernel's restart logic, which looks at it when
// a task stopped inside a syscall resumes, leaves the injected registers
// alone. The arena is reset afterwards.
func (t *Task) Syscall(nr uintptr, args ...uint64) (int64, error) {
	if a := t.Arena(); a != nil {
		defer a.Reset()
	}
	r, err := t.callRegs(nr, args)
	if err != nil {
		return 0, err
	}
	var out unix.PtraceRegs
	if t.trap {
		out, err = t.RunToTrap(&r, t.ip+2)
	} else {
		out, err = t.RunSyscall(&r)
	}
	if err != nil {
		return 0, err
	}
	if t.borrowed {
		if err := t.PutBackRegs(); err != nil {
			return 0, err
		}
	}
	return int64(out.Rax), nil
}

// callRegs returns the registers that make the task call nr with args.
func (t *Task) callRegs(nr uintptr, args []uint64) (unix.PtraceRegs, error) {
	r := t.Regs
	if t.ip == 0 {
		return r, fmt.Errorf("task %d: no syscall instruction to inject from", t.Tid)
	}
	if len(args) > 6 {
		return r, fmt.Errorf("syscall %d: %d arguments", nr, len(args))
	}
	var a [6]uint64
	copy(a[:], args)
	r.Rax, r.Orig_rax, r.Rip = uint64(nr), ^uint64(0), t.ip
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if t.tramp != 0 {
		// The frame that takes the thread back where it was, were cryo
		// to die before it does (tramp_amd64.go).
		own := ptrace.ResumeRegs(t.Regs, true)
		mask, err := kabi.GetSigmask(t.Tid)
		if err != nil {
			return r, fmt.Errorf("signal mask of %d: %w", t.Tid, err)
		}
		at, err := t.stack.putFrame(trampFrame(&own, mask))
		if err != nil {
			return r, fmt.Errorf("task %d: trampoline frame: %w", t.Tid, err)
		}
		r.Rip, r.Rsp = t.tramp, at
	}
	return r, nil
}

// Park holds a borrowed thread where it cannot run its program even if
// cryo dies: it sleeps for d in an injected clock_nanosleep, through the
// return trampoline, with every signal blocked (QuietSignals must be on),
// and Park returns once it is in the call. Traced, it stays there until
// Unpark (or stops at the call's end, should d pass first). Were cryo to
// die, the kernel would let go of a merely stopped thread at once; a
// parked one sleeps on for d, then takes back its signal mask and
// registers through the trampoline and runs on as it was: time for a
// keeper to undo what cryo had begun (TCP repair mode, which fails the
// program's reads and writes).
func (t *Task) Park(d time.Duration) error {
	if t.tramp == 0 || !t.QuietSignals {
		return fmt.Errorf("task %d: parked only through a trampoline, with signals blocked", t.Tid)
	}
	ts := binary.LittleEndian.AppendUint64(nil, uint64(d/time.Second))
	ts = binary.LittleEndian.AppendUint64(ts, uint64(d%time.Second))
	at, err := t.stack.Put(ts) // until Unpark
	if err != nil {
		return fmt.Errorf("task %d: park: %w", t.Tid, err)
	}
	r, err := t.callRegs(unix.SYS_CLOCK_NANOSLEEP, []uint64{unix.CLOCK_MONOTONIC, 0, at, 0})
	if err != nil {
		return err
	}
	if err := t.StartSyscall(&r, true); err != nil {
		return errors.Join(fmt.Errorf("task %d: park: %w", t.Tid, err), t.PutBackRegs())
	}
	return nil
}

// Unpark ends what Park began: the sleep is interrupted and the thread
// stopped again with its own registers, as before Park.
func (t *Task) Unpark() error {
	defer t.stack.Reset()
	if _, err := t.FinishSyscall(); err != nil {
		return fmt.Errorf("task %d: unpark: %w", t.Tid, err)
	}
	return t.PutBackRegs()
}

// Call is Syscall followed by Errno, for the common case; name says what
// the call does in the error.
func (t *Task) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	ret, err := t.Syscall(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s in %d: %w", name, t.Tid, err)
	}
	if err := Errno(ret); err != nil {
		return 0, fmt.Errorf("%s in %d: %w", name, t.Tid, err)
	}
	return uint64(ret), nil
}

// Errno turns a raw syscall result into an error (nil when it is not a
// negative errno). The kernel returns errors as -4095..-1.
func Errno(ret int64) error {
	if errno, ok := errnoOf(ret); ok {
		return errno
	}
	return nil
}

func errnoOf(ret int64) (unix.Errno, bool) {
	if ret < 0 && ret > -4096 {
		return unix.Errno(-ret), true
	}
	return 0, false
}

// ErrSeize marks a failure to seize a stub (StartStub): the caller can tell
// it from a failure to start one.
var ErrSeize = errors.New("seize the stub")

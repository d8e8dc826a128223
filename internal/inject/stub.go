package inject

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/stub"
)

// Layout of a stub's address space from the base it is linked at: its one
// page of code, a gap, the scratch area, a gap. Restore chooses a base
// where StubSpan bytes are free of every VMA of the image.
const (
	stubCode = 0x1000
	stubGap  = 0x10000
	// StubSpan is the span of addresses a stub and its scratch area need.
	StubSpan = stubCode + stubGap + ScratchLen + stubGap
)

// ScratchAt returns the address of the scratch area of a stub linked at base.
func ScratchAt(base uint64) uint64 { return base + stubCode + stubGap }

// StubOptions says how to start and seize a stub.
type StubOptions struct {
	// Name is the stub's command name (its memfd's name); the zero value
	// is "cryo-stub".
	Name string
	// Ptrace are PTRACE_O_* options to seize with, besides TRACESYSGOOD and
	// EXITKILL, which every stub gets: a stub must die with cryo.
	Ptrace int
	// Optional are options to seize with if the kernel lets cryo
	// (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN): on EPERM the seize is
	// retried without them. Zero: none.
	Optional int
	// Files are the stub's fds 3, 4, ...; the zero value: none.
	Files []*os.File
}

// Stub is a stub (package stub) started, seized, and given its scratch
// area: restore forks each process it builds from one, and `cryo check`
// runs its probes in one.
type Stub struct {
	*Task // the stub's only thread, injecting through the scratch area
	Proc  *stub.Proc
	Mem   *Scratch
}

// StartStub starts a stub linked at base (stub.Start), seizes it, maps its
// scratch area at ScratchAt(base) and writes the injection code there. A
// failure to seize wraps ErrSeize. On any failure the stub is killed.
func StartStub(base uint64, o StubOptions) (*Stub, error) {
	if o.Name == "" {
		o.Name = "cryo-stub"
	}
	sp, err := stub.Start(base, o.Name, o.Files...)
	if err != nil {
		return nil, err
	}
	opts := o.Ptrace | kabi.PTRACE_O_TRACESYSGOOD | kabi.PTRACE_O_EXITKILL
	t, err := ptrace.Seize(sp.Pid, opts|o.Optional)
	if err != nil && o.Optional != 0 && errors.Is(err, unix.EPERM) {
		t, err = ptrace.Seize(sp.Pid, opts)
	}
	if err != nil {
		sp.Kill()
		return nil, fmt.Errorf("%w %d: %w", ErrSeize, sp.Pid, err)
	}
	s := &Stub{Proc: sp}
	if s.Mem, err = mapScratch(t, sp.Pid, base+stub.SyscallOffset, ScratchAt(base)); err != nil {
		sp.Kill()
		return nil, fmt.Errorf("stub %d: %w", sp.Pid, err)
	}
	s.Task = Built(t, s.Mem)
	return s, nil
}

// Kill kills the stub and reaps it.
func (s *Stub) Kill() { s.Proc.Kill() }

// KillChild kills a child the stub forked (auto-attached to cryo by
// PTRACE_O_TRACEFORK) and reaps it twice: as its tracer, cryo sees it die
// first; then the stub, its parent, reaps it by an injected wait4, so that
// no zombie is left to whoever inherits it when the stub dies (cryo, if it
// is a child subreaper).
func (s *Stub) KillChild(pid int) error {
	if err := ptrace.Kill(pid, pid); err != nil {
		return err
	}
	_, err := s.Call(fmt.Sprintf("wait4 %d", pid), unix.SYS_WAIT4, uint64(pid), 0, unix.WALL, 0)
	return err
}

// mapScratch maps a scratch area at addr in the stopped task t of pid, by
// a syscall injected through the instruction at ip (the stub's own: no
// int3 follows it), and writes the injection code into it. It is
// executable for that code, and MAP_FIXED_NOREPLACE: a base that collides
// with anything fails instead of replacing it.
func mapScratch(t *ptrace.Task, pid int, ip, addr uint64) (*Scratch, error) {
	s := newScratch(pid, addr)
	boot := &Task{Task: t, ip: ip, scratch: s}
	ret, err := boot.Call("mmap scratch area", unix.SYS_MMAP, addr, ScratchLen,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|kabi.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return nil, err
	}
	if ret != addr {
		return nil, fmt.Errorf("mmap scratch area: kernel placed it at %#x, not %#x", ret, addr)
	}
	code, _, err := scratchCode()
	if err != nil {
		return nil, err
	}
	if err := ptrace.WriteMem(pid, addr, code); err != nil {
		return nil, err
	}
	return s, nil
}

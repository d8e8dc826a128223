package feature

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/stub"
)

// Layout of a probe stub: the stub's one page of code, then a read-write
// scratch area for the arguments of injected syscalls. Low addresses, far
// from the stack and vdso the kernel gives the stub near the top.
const (
	stubBase    = 0x10000000
	scratchAddr = stubBase + 0x10000
	scratchSize = 0x4000
)

// stubProc is a restore stub started for one probe, seized and stopped.
type stubProc struct {
	pid  int
	task *ptrace.Task
	code []byte // the stub's ELF image, mapped at stubBase
}

// errSeize marks a failure to seize the stub, which ptrace_seize and
// ptrace_suspend_seccomp classify themselves.
var errSeize = errors.New("seize the probe stub")

// withStub starts a stub, seizes it with opts (plus TRACESYSGOOD and
// EXITKILL), maps the scratch area, runs fn, then kills and reaps the stub.
//
// Everything runs on a fresh goroutine locked to its OS thread: the kernel
// ties a tracee to the tracer thread (see package ptrace). The thread is
// left locked when the goroutine ends, so the Go runtime retires it, and
// with it any tracee a bug might have left behind (EXITKILL kills those).
func withStub(opts int, fn func(s *stubProc) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- runStub(opts, fn)
	}()
	return <-done
}

func runStub(opts int, fn func(s *stubProc) error) (err error) {
	code, err := stub.Build(stubBase)
	if err != nil {
		return err
	}
	// Started as the restore starts its stubs: a non-root cryo's probes
	// then hold the capability its restores hand on.
	sp, err := stub.Start(stubBase, "cryo-check-stub")
	if err != nil {
		return fmt.Errorf("start probe stub: %w", err)
	}
	defer sp.Kill()
	pid := sp.Pid
	t, err := ptrace.Seize(pid, opts|kabi.PTRACE_O_TRACESYSGOOD|kabi.PTRACE_O_EXITKILL)
	if err != nil {
		return fmt.Errorf("%w: %w", errSeize, err)
	}
	t.SyscallIP = stubBase + stub.SyscallOffset
	s := &stubProc{pid: pid, task: t, code: code}
	if _, err := t.Call("mmap scratch", unix.SYS_MMAP, scratchAddr, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|kabi.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return err
	}
	return fn(s)
}

// call injects a syscall into the stub and returns its raw result
// (negative errno on failure).
func (s *stubProc) call(nr uintptr, args ...uint64) (int64, error) {
	return s.task.Syscall(nr, args...)
}

// put writes b into the scratch area at off and returns its address.
func (s *stubProc) put(off uint64, b []byte) (uint64, error) {
	addr := uint64(scratchAddr) + off
	return addr, ptrace.WriteMem(s.pid, addr, b)
}

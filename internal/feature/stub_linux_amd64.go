package feature

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/stub"
)

// stubBase is where probe stubs are linked: low, far from the stack and
// vdso the kernel gives the stub near the top.
const stubBase = 0x10000000

// stubProc is a restore stub started for one probe, seized and stopped,
// with its scratch area (inject.StartStub, as restore starts its stubs).
type stubProc struct {
	*inject.Stub
	pid  int
	code []byte // the stub's ELF image, mapped at stubBase
}

// withStub starts a stub, seizes it with opts (plus TRACESYSGOOD and
// EXITKILL), runs fn, then kills and reaps the stub. A failure to seize
// wraps inject.ErrSeize, which ptrace_seize and ptrace_suspend_seccomp
// classify themselves.
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
	st, err := inject.StartStub(stubBase, inject.StubOptions{Name: "cryo-check-stub", Ptrace: opts})
	if err != nil {
		if errors.Is(err, inject.ErrSeize) {
			return err
		}
		return fmt.Errorf("start probe stub: %w", err)
	}
	defer st.Kill()
	return fn(&stubProc{Stub: st, pid: st.Proc.Pid, code: code})
}

// call injects a syscall into the stub and returns its raw result
// (negative errno on failure).
func (s *stubProc) call(nr uintptr, args ...uint64) (int64, error) {
	return s.Syscall(nr, args...)
}

// put writes b into the scratch area's call arena and returns its
// address, good for the next call.
func (s *stubProc) put(b []byte) (uint64, error) { return s.Mem.Put(b) }

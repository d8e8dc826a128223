package feature

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// An unknown ptrace request fails with EIO (kernel/ptrace.c,
// ptrace_request's default case), an unknown option with EINVAL.

func probePtraceSeize() (string, error) {
	err := withStub(0, func(s *stubProc) error {
		rip := s.Regs.Rip
		if rip < stubBase || rip >= stubBase+0x1000 {
			return fmt.Errorf("stub %d stopped at %#x, outside its code", s.pid, rip)
		}
		return nil
	})
	if errors.Is(err, inject.ErrSeize) {
		return "", classify("PTRACE_SEIZE+PTRACE_INTERRUPT", err, "needs the same uid or CAP_SYS_PTRACE", unix.EIO, unix.EINVAL)
	}
	return "", err
}

func probeXstate() (detail string, err error) {
	err = withStub(0, func(s *stubProc) error {
		buf := make([]byte, kabi.XstateMaxSize)
		n, err := kabi.GetRegset(s.pid, kabi.NT_X86_XSTATE, buf)
		if err != nil {
			return classify("PTRACE_GETREGSET(NT_X86_XSTATE)", err, "", unix.EIO, unix.EINVAL, unix.ENODEV)
		}
		if n < kabi.XstateHeaderOffset+16 {
			return fmt.Errorf("NT_X86_XSTATE gave %d bytes, less than the xsave header", n)
		}
		xcr0 := binary.LittleEndian.Uint64(buf[kabi.XstateXCR0Offset:])
		// Restore writes the set back: put the same bytes, which changes nothing.
		if err := kabi.SetRegset(s.pid, kabi.NT_X86_XSTATE, buf[:n]); err != nil {
			return classify("PTRACE_SETREGSET(NT_X86_XSTATE)", err, "", unix.EIO, unix.EINVAL, unix.ENODEV)
		}
		detail = fmt.Sprintf("xstate %d bytes, XCR0 %#x", n, xcr0)
		return nil
	})
	return detail, err
}

func probeSigmask() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		old, err := kabi.GetSigmask(s.pid)
		if err != nil {
			return classify("PTRACE_GETSIGMASK", err, "", unix.EIO)
		}
		want := old | 1<<(unix.SIGUSR1-1)
		if err := kabi.SetSigmask(s.pid, want); err != nil {
			return classify("PTRACE_SETSIGMASK", err, "", unix.EIO)
		}
		got, err := kabi.GetSigmask(s.pid)
		if err != nil {
			return fmt.Errorf("PTRACE_GETSIGMASK after set: %w", err)
		}
		if got != want {
			return fmt.Errorf("PTRACE_SETSIGMASK %#x, then GETSIGMASK %#x", want, got)
		}
		return nil
	})
}

func probePeekSiginfo() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		// Block SIGUSR1 in the stub (injected rt_sigprocmask, so as not to
		// depend on PTRACE_SETSIGMASK) and queue one: it stays pending.
		set := make([]byte, 8)
		binary.LittleEndian.PutUint64(set, 1<<(unix.SIGUSR1-1))
		addr, err := s.put(set)
		if err != nil {
			return err
		}
		ret, err := s.call(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, addr, 0, 8)
		if err != nil {
			return err
		}
		if err := inject.Errno(ret); err != nil {
			return fmt.Errorf("rt_sigprocmask in stub: %w", err)
		}
		if err := unix.Tgkill(s.pid, s.pid, unix.SIGUSR1); err != nil {
			return fmt.Errorf("tgkill stub: %w", err)
		}
		buf := make([]kabi.Siginfo, 4)
		n, err := kabi.PeekSiginfo(s.pid, 0, false, buf)
		if err != nil {
			return classify("PTRACE_PEEKSIGINFO", err, "", unix.EIO)
		}
		if n != 1 || buf[0].Signo() != int(unix.SIGUSR1) {
			return fmt.Errorf("PTRACE_PEEKSIGINFO saw %d signals (first %d), want one SIGUSR1", n, buf[0].Signo())
		}
		return nil
	})
}

// registerRseq registers a struct rseq in the stub's scratch area and
// returns its address; the raw result is returned for the caller to judge.
func (s *stubProc) registerRseq() (uint64, int64, error) {
	// struct rseq is 32-byte aligned, and zero before registration. The
	// kernel writes into it from now on (cpu_id, on every return to user
	// space): no probe puts anything into the arena after registering.
	addr, err := s.Mem.Alloc(kabi.RseqOrigSize, 32)
	if err != nil {
		return 0, 0, err
	}
	if err := ptrace.WriteMem(s.pid, addr, make([]byte, kabi.RseqOrigSize)); err != nil {
		return 0, 0, err
	}
	ret, err := s.call(unix.SYS_RSEQ, addr, kabi.RseqOrigSize, 0, kabi.RseqGlibcSignature)
	return addr, ret, err
}

func probeRseqConfig() (detail string, err error) {
	err = withStub(0, func(s *stubProc) error {
		addr, ret, err := s.registerRseq()
		if err != nil {
			return err
		}
		registered := inject.Errno(ret) == nil
		c, err := kabi.GetRseqConfiguration(s.pid)
		if err != nil {
			return classify("PTRACE_GET_RSEQ_CONFIGURATION", err, "", unix.EIO)
		}
		if !registered {
			// No rseq syscall: the request works, and says "none".
			if c.RseqAbiPointer != 0 {
				return fmt.Errorf("rseq not registered, yet PTRACE_GET_RSEQ_CONFIGURATION says %#x", c.RseqAbiPointer)
			}
			detail = "works (rseq itself unavailable)"
			return nil
		}
		if c.RseqAbiPointer != addr || c.RseqAbiSize != kabi.RseqOrigSize || c.Signature != kabi.RseqGlibcSignature {
			return fmt.Errorf("PTRACE_GET_RSEQ_CONFIGURATION gave %#x/%d/%#x, registered %#x/%d/%#x",
				c.RseqAbiPointer, c.RseqAbiSize, c.Signature, addr, kabi.RseqOrigSize, kabi.RseqGlibcSignature)
		}
		return nil
	})
	return detail, err
}

// seccompAllow is a one-instruction filter that allows every syscall.
var seccompAllow = []byte{kabi.BPF_RET_K, 0, 0, 0, 0x00, 0x00, 0xff, 0x7f} // k = SECCOMP_RET_ALLOW

func probeSeccompFilter() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		// Before any filter: the request is known (EINVAL "no filter", or
		// EACCES) or not (EIO).
		if _, err := kabi.SeccompFilter(s.pid, 0); errors.Is(err, unix.EIO) {
			return classify("PTRACE_SECCOMP_GET_FILTER", err, "", unix.EIO)
		} else if errors.Is(err, unix.EACCES) {
			return classify("PTRACE_SECCOMP_GET_FILTER", err, "needs CAP_SYS_ADMIN, and cryo itself not under seccomp")
		}
		if _, err := s.Call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
			return err
		}
		filter, err := s.put(seccompAllow)
		if err != nil {
			return err
		}
		var prog [16]byte // struct sock_fprog: u16 len, padding, u64 filter
		binary.LittleEndian.PutUint16(prog[0:], 1)
		binary.LittleEndian.PutUint64(prog[8:], filter)
		pp, err := s.put(prog[:])
		if err != nil {
			return err
		}
		ret, err := s.call(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, pp)
		if err != nil {
			return err
		}
		if err := inject.Errno(ret); err != nil {
			return classify("seccomp(SECCOMP_SET_MODE_FILTER) in stub", err, "", unix.ENOSYS, unix.EINVAL)
		}
		got, err := kabi.SeccompFilter(s.pid, 0)
		if err != nil {
			return classify("PTRACE_SECCOMP_GET_FILTER", err, "needs CAP_SYS_ADMIN, and cryo itself not under seccomp", unix.EIO)
		}
		if !bytes.Equal(got, seccompAllow) {
			return fmt.Errorf("PTRACE_SECCOMP_GET_FILTER gave % x, installed % x", got, seccompAllow)
		}
		if _, err := kabi.SeccompFilter(s.pid, 1); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("PTRACE_SECCOMP_GET_FILTER past the last filter: %v, want ENOENT", err)
		}
		return nil
	})
}

// ptraceOSuspendSeccomp is PTRACE_O_SUSPEND_SECCOMP.
const ptraceOSuspendSeccomp = 1 << 21

func probeSuspendSeccomp() (string, error) {
	err := withStub(ptraceOSuspendSeccomp, func(*stubProc) error { return nil })
	if errors.Is(err, inject.ErrSeize) {
		return "", classify("PTRACE_SEIZE(PTRACE_O_SUSPEND_SECCOMP)", err, "needs CAP_SYS_ADMIN, and cryo itself not under seccomp", unix.EINVAL)
	}
	return "", err
}

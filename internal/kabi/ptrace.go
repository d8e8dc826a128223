package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ptrace requests missing from x/sys/unix (include/uapi/linux/ptrace.h).
const (
	PTRACE_GETREGSET              = 0x4204
	PTRACE_SETREGSET              = 0x4205
	PTRACE_PEEKSIGINFO            = 0x4209
	PTRACE_GETSIGMASK             = 0x420a
	PTRACE_SETSIGMASK             = 0x420b
	PTRACE_SECCOMP_GET_FILTER     = 0x420c
	PTRACE_SECCOMP_GET_METADATA   = 0x420d
	PTRACE_GET_RSEQ_CONFIGURATION = 0x420f
	PTRACE_PEEKSIGINFO_SHARED     = 1
	NT_PRSTATUS                   = 1
	NT_PRFPREG                    = 2
	NT_X86_XSTATE                 = 0x202
	PTRACE_EVENT_STOP             = 128
	PTRACE_O_TRACESYSGOOD         = 1
	PTRACE_O_TRACEFORK            = 1 << 1
	PTRACE_O_TRACECLONE           = 1 << 3
	PTRACE_O_TRACEEXIT            = 1 << 6
	PTRACE_O_EXITKILL             = 1 << 20
	SiginfoSize                   = 128
	XstateMaxSize                 = 1 << 14 // generous: AMX needs ~11 KiB
	XstateXCR0Offset              = 464     // sw_reserved.xstate_bv... fx_sw_bytes.xfeatures in the fxsave area
	XstateHeaderOffset            = 512     // xsave header: xstate_bv u64, xcomp_bv u64
	FxsaveSize                    = 512
)

// PeekSiginfoArgs is struct ptrace_peeksiginfo_args.
type PeekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// RseqConfiguration is struct ptrace_rseq_configuration.
type RseqConfiguration struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// Siginfo is the kernel's 128-byte siginfo_t, kept opaque: cryo stores it as
// bytes and hands it back to rt_tgsigqueueinfo unchanged.
type Siginfo [SiginfoSize]byte

// Signo returns si_signo.
func (s *Siginfo) Signo() int { return int(*(*int32)(unsafe.Pointer(&s[0]))) }

// Code returns si_code.
func (s *Siginfo) Code() int { return int(*(*int32)(unsafe.Pointer(&s[8]))) }

// Pid returns si_pid (of SIGCHLD, kill(2) and waitid(2) reports).
func (s *Siginfo) Pid() int { return int(*(*int32)(unsafe.Pointer(&s[16]))) }

// Status returns si_status of a SIGCHLD or waitid(2) report: the exit
// status, or the signal that killed, stopped or continued the child.
func (s *Siginfo) Status() int { return int(*(*int32)(unsafe.Pointer(&s[24]))) }

// Waitid is waitid(2) of cryo's own, returning the raw siginfo (x/sys's
// Siginfo hides si_pid and si_status).
func Waitid(idtype, id, options int) (Siginfo, error) {
	var si Siginfo
	_, _, e := unix.Syscall6(unix.SYS_WAITID, uintptr(idtype), uintptr(id), uintptr(unsafe.Pointer(&si)), uintptr(options), 0, 0)
	if e != 0 {
		return si, e
	}
	return si, nil
}

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// GetRegset reads register set nt of tid into buf and returns how many bytes
// the kernel filled (it shrinks iov_len to the set's real size).
func GetRegset(tid int, nt int, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0], Len: uint64(len(buf))}
	if err := ptrace(PTRACE_GETREGSET, tid, uintptr(nt), uintptr(unsafe.Pointer(&iov))); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

// SetRegset writes register set nt of tid from buf.
func SetRegset(tid int, nt int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0], Len: uint64(len(buf))}
	return ptrace(PTRACE_SETREGSET, tid, uintptr(nt), uintptr(unsafe.Pointer(&iov)))
}

// GetSigmask returns the blocked-signal mask of tid.
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	err := ptrace(PTRACE_GETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m)))
	return m, err
}

// SetSigmask sets the blocked-signal mask of tid.
func SetSigmask(tid int, m uint64) error {
	return ptrace(PTRACE_SETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m)))
}

// PeekSiginfo copies up to len(buf) queued signals of tid starting at off,
// from the thread's private queue or, with shared, the process-wide one.
// The queue is left untouched.
func PeekSiginfo(tid int, off uint64, shared bool, buf []Siginfo) (int, error) {
	a := PeekSiginfoArgs{Off: off, Nr: int32(len(buf))}
	if shared {
		a.Flags = PTRACE_PEEKSIGINFO_SHARED
	}
	n, _, e := unix.Syscall6(unix.SYS_PTRACE, PTRACE_PEEKSIGINFO, uintptr(tid),
		uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// GetSiginfo returns the siginfo of the signal that put tid in a signal-delivery-stop.
func GetSiginfo(tid int) (Siginfo, error) {
	var si Siginfo
	err := ptrace(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si)))
	return si, err
}

// GetRseqConfiguration returns tid's rseq registration (pointer 0 if none).
func GetRseqConfiguration(tid int) (RseqConfiguration, error) {
	var c RseqConfiguration
	err := ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)))
	return c, err
}

// SeccompMetadata returns the flags of tid's n-th seccomp filter (0 is the
// most recently installed): SECCOMP_FILTER_FLAG_LOG is the one the kernel
// keeps.
func SeccompMetadata(tid int, n int) (uint64, error) {
	md := struct{ FilterOff, Flags uint64 }{FilterOff: uint64(n)}
	err := ptrace(PTRACE_SECCOMP_GET_METADATA, tid, unsafe.Sizeof(md), uintptr(unsafe.Pointer(&md)))
	return md.Flags, err
}

// SeccompFilter returns the BPF program of tid's n-th seccomp filter (0 is the
// most recently installed) as raw sock_filter instructions, 8 bytes each.
// It returns ENOENT past the last filter.
func SeccompFilter(tid int, n int) ([]byte, error) {
	cnt, _, e := unix.Syscall6(unix.SYS_PTRACE, PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(n), 0, 0, 0)
	if e != 0 {
		return nil, e
	}
	buf := make([]byte, cnt*8)
	if cnt == 0 {
		return buf, nil
	}
	_, _, e = unix.Syscall6(unix.SYS_PTRACE, PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(n), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return nil, e
	}
	return buf, nil
}

// Seize attaches to tid without stopping it.
func Seize(tid int, opts int) error {
	return ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(opts))
}

// Interrupt asks a seized tid to enter a PTRACE_EVENT_STOP.
func Interrupt(tid int) error { return ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0) }

// Cont resumes tid, delivering sig if non-zero.
func Cont(tid int, sig int) error { return ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)) }

// SyscallStep resumes tid until the next syscall entry or exit.
func SyscallStep(tid int, sig int) error { return ptrace(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig)) }

// Detach detaches from tid, delivering sig if non-zero.
func Detach(tid int, sig int) error { return ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)) }

// GetEventMsg returns the message of the last ptrace event (a new child's pid).
func GetEventMsg(tid int) (uint64, error) {
	var m uint64
	err := ptrace(unix.PTRACE_GETEVENTMSG, tid, 0, uintptr(unsafe.Pointer(&m)))
	return m, err
}

// GetRegs / SetRegs wrap PTRACE_GETREGS/SETREGS (struct user_regs_struct).
func GetRegs(tid int, r *unix.PtraceRegs) error {
	return ptrace(unix.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(r)))
}

// SetRegs sets the general registers, fs_base and gs_base included.
func SetRegs(tid int, r *unix.PtraceRegs) error {
	return ptrace(unix.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(r)))
}

// SchedYield gives up the CPU: a tracer polling for a tracee's stop lets
// the tracee run sooner on a machine with few CPUs.
func SchedYield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

// GetRobustList returns tid's robust futex list head and the length it
// registered (get_robust_list needs PTRACE_MODE_READ on tid).
func GetRobustList(tid int) (head, size uint64, err error) {
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&size))); e != 0 {
		return 0, 0, e
	}
	return head, size, nil
}

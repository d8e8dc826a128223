package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel-internal syscall return values that leak into a stopped task's rax
// when it was interrupted inside a blocking syscall (include/linux/errno.h).
const (
	ERESTARTSYS           = 512
	ERESTARTNOINTR        = 513
	ERESTARTNOHAND        = 514
	ERESTART_RESTARTBLOCK = 516
)

// IsRestart reports whether rax (as the kernel leaves it in a task stopped on
// its way out of a syscall) asks for the syscall to be restarted.
func IsRestart(rax uint64) bool {
	switch int64(rax) {
	case -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK:
		return true
	}
	return false
}

// CloneArgs is struct clone_args (clone3), version 2 (with set_tid and cgroup).
type CloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64
	SetTidSize uint64
	Cgroup     uint64
}

// Sigaction is the kernel's x86_64 struct sigaction (not glibc's: the mask is
// last and is only 8 bytes).
type Sigaction struct {
	Handler  uint64
	Flags    uint64
	Restorer uint64
	Mask     uint64
}

// Stack is stack_t for sigaltstack.
type Stack struct {
	Sp    uint64
	Flags int32
	_     int32
	Size  uint64
}

// Itimerval is struct itimerval (getitimer/setitimer).
type Itimerval struct {
	IntervalSec, IntervalUsec int64
	ValueSec, ValueUsec       int64
}

// Itimerspec is struct itimerspec (timer_gettime/timer_settime).
type Itimerspec struct {
	IntervalSec, IntervalNsec int64
	ValueSec, ValueNsec       int64
}

// Sigevent is the 64-byte struct sigevent used by timer_create.
type Sigevent struct {
	Value  uint64
	Signo  int32
	Notify int32
	Tid    int32 // sigev_notify_thread_id, for SIGEV_THREAD_ID
	_      [44]byte
}

// Timer notification kinds (SIGEV_*).
const (
	SIGEV_SIGNAL    = 0
	SIGEV_NONE      = 1
	SIGEV_THREAD_ID = 4
)

// PrctlMmMap is struct prctl_mm_map for prctl(PR_SET_MM, PR_SET_MM_MAP).
type PrctlMmMap struct {
	StartCode, EndCode uint64
	StartData, EndData uint64
	StartBrk, Brk      uint64
	StartStack         uint64
	ArgStart, ArgEnd   uint64
	EnvStart, EnvEnd   uint64
	Auxv               uint64
	AuxvSize           uint32
	ExeFd              uint32
}

// prctl options missing from x/sys/unix.
const (
	PR_SET_MM_MAP        = 14
	PR_SET_MM_MAP_SIZE   = 15
	ARCH_MAP_VDSO_64     = 0x2003
	KCMP_FILE            = 0
	KCMP_VM              = 1
	KCMP_FILES           = 2
	KCMP_FS              = 3
	KCMP_SIGHAND         = 4
	RSEQ_FLAG_UNREGISTER = 1
)

// Kcmp compares kernel objects of two processes: 0 if they are the same.
func Kcmp(pid1, pid2, typ int, idx1, idx2 uintptr) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), idx1, idx2, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Bytes returns the in-memory representation of a fixed-size ABI struct, to
// be written into a stopped task's memory.
func Bytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// FromBytes reads a fixed-size ABI struct out of b (which must be long enough).
func FromBytes[T any](b []byte) T {
	var v T
	copy(Bytes(&v), b)
	return v
}

// SetThreadCreds sets the real, effective and saved uid and gid of the
// calling thread only (the raw syscalls; glibc and Go's syscall package
// set every thread). The caller runs on a locked OS thread that it lets
// die afterwards, so the change never reaches other goroutines.
func SetThreadCreds(uid, gid uint32) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return e
	}
	return nil
}

// SemGetPid is semctl(semid, semnum, GETPID): the pid of the last semop on
// that semaphore (0 if none). x/sys has no semctl.
func SemGetPid(semid, semnum int) (int, error) {
	const getpid = 11 // GETPID, include/uapi/linux/sem.h
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(semid), uintptr(semnum), getpid, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

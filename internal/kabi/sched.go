package kabi

import "golang.org/x/sys/unix"

// I/O priorities (include/uapi/linux/ioprio.h): ioprio_get and ioprio_set
// of one thread.
const (
	IOPRIO_WHO_PROCESS = 1
	IOPRIO_CLASS_SHIFT = 13
	IOPRIO_CLASS_NONE  = 0
	IOPRIO_CLASS_RT    = 1
	IOPRIO_CLASS_BE    = 2
	IOPRIO_CLASS_IDLE  = 3
)

// IoprioGet returns the I/O priority of thread tid.
func IoprioGet(tid int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, uintptr(tid), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// IoprioSet sets the I/O priority of thread tid.
func IoprioSet(tid int, prio int) error {
	if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, uintptr(tid), uintptr(prio)); e != 0 {
		return e
	}
	return nil
}

// membarrier(2) commands (include/uapi/linux/membarrier.h): the
// registrations a process can hold, and the query of them (6.3).
const (
	MEMBARRIER_CMD_QUERY                                = 0
	MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED            = 1 << 2
	MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED           = 1 << 4
	MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE = 1 << 6
	MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ      = 1 << 8
	MEMBARRIER_CMD_GET_REGISTRATIONS                    = 1 << 9
	// MEMBARRIER_REGISTRATIONS is every registration command.
	MEMBARRIER_REGISTRATIONS = MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED |
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ
)

// prctl(PR_SET_MDWE) flags (include/uapi/linux/prctl.h).
const (
	PR_MDWE_REFUSE_EXEC_GAIN = 1
	PR_MDWE_NO_INHERIT       = 2
)

// Task flags as /proc/PID/stat field 9 shows them (include/linux/sched.h):
// PR_SET_IO_FLUSHER sets these two, and PR_GET_IO_FLUSHER, which needs
// CAP_SYS_RESOURCE in the asking task, reads them.
const (
	PF_MEMALLOC_NOIO  = 0x00080000
	PF_LOCAL_THROTTLE = 0x00100000
	PF_IO_FLUSHER     = PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE
)

// The audit ids of a task that has none (include/linux/audit.h).
const (
	AUDIT_UID_UNSET = 0xffffffff
	AUDIT_SID_UNSET = 0xffffffff
)

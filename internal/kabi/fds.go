package kabi

import (
	"unsafe"

	"fmt"

	"golang.org/x/sys/unix"
)

// TFD_IOC_SET_TICKS is _IOW('T', 0, __u64) (include/uapi/linux/timerfd.h):
// it sets the number of expirations a timerfd reports on its next read. The
// kernel has it only with CONFIG_CHECKPOINT_RESTORE; without, the ioctl
// fails with ENOTTY.
const TFD_IOC_SET_TICKS = 1<<30 | 8<<16 | 'T'<<8 // nr 0

// FIONREAD (asm-generic/ioctls.h) asks a file how many bytes a read would
// return now; an inotify fd answers with the size of its queued events.
const FIONREAD = 0x541B

// GetFd copies fd of process pid into the caller: pidfd_open then
// pidfd_getfd, which needs PTRACE_MODE_ATTACH on pid. The copy shares the
// open file description (offset, status flags, a socket's very self) and
// is close-on-exec.
func GetFd(pid, fd int) (int, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	cp, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return cp, nil
}

// F_OWNER_* are the kinds of owner F_GETOWN_EX reports
// (include/uapi/asm-generic/fcntl.h).
const (
	F_OWNER_TID  = 0
	F_OWNER_PID  = 1
	F_OWNER_PGRP = 2
)

// GetOwnerEx is fcntl(F_GETOWN_EX): who gets fd's SIGIO and SIGURG, by
// kind (F_OWNER_*) and id; 0 and 0 when nobody does. Unlike F_GETOWN, it
// cannot mistake a process group for an error.
func GetOwnerEx(fd int) (kind, id int, err error) {
	var o struct{ Type, Pid int32 }
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&o))); e != 0 {
		return 0, 0, e
	}
	return int(o.Type), int(o.Pid), nil
}

// F_GETOWNER_UIDS (include/uapi/linux/fcntl.h, CONFIG_CHECKPOINT_RESTORE)
// reads the real and effective uid the owner of a file's SIGIO was set
// with: the kernel records the caller's at F_SETOWN, and checks them
// against the receiver's when it signals.
const F_GETOWNER_UIDS = 17

// GetOwnerUids is fcntl(F_GETOWNER_UIDS): the uid and euid fd's owner was
// set with (0, 0 when nobody owns it).
func GetOwnerUids(fd int) (uid, euid uint32, err error) {
	var ids [2]uint32
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), F_GETOWNER_UIDS, uintptr(unsafe.Pointer(&ids))); e != 0 {
		return 0, 0, e
	}
	return ids[0], ids[1], nil
}

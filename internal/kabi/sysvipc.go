package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// System V semaphores and message queues, which x/sys/unix lacks (it has
// shared memory only): semget/semctl, msgget/msgctl/msgsnd/msgrcv, and
// their x86_64 ipc64 structs (arch/x86/include/uapi/asm/sembuf.h,
// include/uapi/asm-generic/msgbuf.h). On x86_64 every ipc call takes the
// 64-bit layout without IPC_64 (no ARCH_WANT_IPC_PARSE_VERSION).

// semctl and msgctl commands (include/uapi/linux/ipc.h, sem.h, msg.h).
const (
	SemGETPID  = 11
	SemGETVAL  = 12
	SemGETALL  = 13
	SemGETNCNT = 14
	SemGETZCNT = 15
	SemSETVAL  = 16
	SemSETALL  = 17
	// MSG_COPY is msgrcv's non-destructive read of the message at index
	// msgtyp (CONFIG_CHECKPOINT_RESTORE; ENOSYS without it).
	MSG_COPY = 0o40000
	// KCMP_SYSVSEM compares two tasks' semaphore undo lists.
	KCMP_SYSVSEM = 6
	// SEMVMX is the largest value of a semaphore.
	SEMVMX = 32767
)

// SemidDs is struct semid64_ds of x86_64.
type SemidDs struct {
	Perm  unix.SysvIpcPerm
	Otime int64
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     [2]uint64
}

// MsqidDs is struct msqid64_ds of x86_64.
type MsqidDs struct {
	Perm         unix.SysvIpcPerm
	Stime        int64
	Rtime        int64
	Ctime        int64
	Cbytes       uint64
	Qnum         uint64
	Qbytes       uint64
	Lspid, Lrpid int32
	_            [2]uint64
}

func ipcRet(r uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// SemGet is semget(key, nsems, flags).
func SemGet(key int32, nsems int, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flags))
	return ipcRet(r, e)
}

// SemCtl is semctl(id, num, cmd, arg) for the commands whose argument is a
// value (SETVAL) or none.
func SemCtl(id, num, cmd int, arg uintptr) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), arg, 0, 0)
	return ipcRet(r, e)
}

// SemStat is semctl(id, 0, IPC_STAT).
func SemStat(id int) (SemidDs, error) {
	var ds SemidDs
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds)), 0, 0)
	_, err := ipcRet(0, e)
	return ds, err
}

// SemSetPerm is semctl(id, 0, IPC_SET): uid, gid and mode of ds.Perm.
func SemSetPerm(id int, ds *SemidDs) error {
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_SET, uintptr(unsafe.Pointer(ds)), 0, 0)
	_, err := ipcRet(0, e)
	return err
}

// SemGetAll is semctl(id, 0, GETALL) of a set of n semaphores.
func SemGetAll(id, n int) ([]uint16, error) {
	v := make([]uint16, max(n, 1))
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, SemGETALL, uintptr(unsafe.Pointer(&v[0])), 0, 0)
	if _, err := ipcRet(0, e); err != nil {
		return nil, err
	}
	return v[:n], nil
}

// SemRemove is semctl(id, 0, IPC_RMID).
func SemRemove(id int) error {
	_, err := SemCtl(id, 0, unix.IPC_RMID, 0)
	return err
}

// MsgGet is msgget(key, flags).
func MsgGet(key int32, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flags), 0)
	return ipcRet(r, e)
}

// MsgStat is msgctl(id, IPC_STAT).
func MsgStat(id int) (MsqidDs, error) {
	var ds MsqidDs
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds)))
	_, err := ipcRet(0, e)
	return ds, err
}

// MsgSetPerm is msgctl(id, IPC_SET): uid, gid, mode and qbytes of ds.
func MsgSetPerm(id int, ds *MsqidDs) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_SET, uintptr(unsafe.Pointer(ds)))
	_, err := ipcRet(0, e)
	return err
}

// MsgRemove is msgctl(id, IPC_RMID).
func MsgRemove(id int) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_RMID, 0)
	_, err := ipcRet(0, e)
	return err
}

// MsgSnd is msgsnd(id, buf, len(buf)-8, flags): buf is struct msgbuf, the
// type in its first 8 bytes (native order), then the text.
func MsgSnd(id int, buf []byte, flags int) error {
	if len(buf) < 8 {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(flags), 0, 0)
	_, err := ipcRet(0, e)
	return err
}

// MsgRcv is msgrcv(id, buf, len(buf)-8, typ, flags): it returns the
// length of the text, after the 8 bytes of type in buf.
func MsgRcv(id int, buf []byte, typ int64, flags int) (int, error) {
	if len(buf) < 8 {
		return 0, unix.EINVAL
	}
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(typ), uintptr(flags), 0)
	return ipcRet(r, e)
}

// Sembuf is struct sembuf, one operation of a semop.
type Sembuf struct {
	Num uint16
	Op  int16
	Flg int16
}

// SemOp is semop(id, ops).
func SemOp(id int, ops []Sembuf) error {
	if len(ops) == 0 {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall(unix.SYS_SEMOP, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)))
	_, err := ipcRet(0, e)
	return err
}

// SemTimedOp is semtimedop(id, ops, timeout).
func SemTimedOp(id int, ops []Sembuf, timeout *unix.Timespec) error {
	if len(ops) == 0 {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall6(unix.SYS_SEMTIMEDOP, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)), uintptr(unsafe.Pointer(timeout)), 0, 0)
	_, err := ipcRet(0, e)
	return err
}

package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// VMA status bits of CRIU's vma_entry.status (criu/include/image.h): part of
// the image ABI.
const (
	VMA_AREA_REGULAR  = 1 << 0
	VMA_AREA_STACK    = 1 << 1
	VMA_AREA_VSYSCALL = 1 << 2
	VMA_AREA_VDSO     = 1 << 3
	VMA_AREA_HEAP     = 1 << 5
	VMA_FILE_PRIVATE  = 1 << 6
	VMA_FILE_SHARED   = 1 << 7
	VMA_ANON_SHARED   = 1 << 8
	VMA_ANON_PRIVATE  = 1 << 9
	VMA_AREA_SYSVIPC  = 1 << 10
	VMA_AREA_VVAR     = 1 << 12
	VMA_AREA_MEMFD    = 1 << 14
)

// CRIU pagemap_entry flags.
const (
	PE_PRESENT = 1 << 2
)

// /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	PM_PRESENT = 1 << 63
	PM_SWAP    = 1 << 62
	PM_FILE    = 1 << 61 // file page or shared anonymous
	// PM_GUARD_REGION marks a guard page (MADV_GUARD_INSTALL, 6.14); the
	// kernel sets PM_SWAP with it.
	PM_GUARD_REGION = 1 << 58
)

// MAP_GROWSDOWN etc. not all in x/sys under these names.
const (
	MAP_FIXED_NOREPLACE = 0x100000
)

// Iovec is struct iovec with the base as a plain integer: the remote side of
// process_vm_readv/writev names addresses of another process, which must
// never look like Go pointers.
type Iovec struct {
	Base uint64
	Len  uint64
}

// LocalIovec describes b; the caller keeps b alive until the call returns.
func LocalIovec(b []byte) Iovec {
	return Iovec{Base: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), Len: uint64(len(b))}
}

// ProcessVMReadv reads the remote ranges into the local ones.
func ProcessVMReadv(pid int, local, remote []Iovec) (int, error) {
	return processVM(unix.SYS_PROCESS_VM_READV, pid, local, remote)
}

// ProcessVMWritev writes the local ranges into the remote ones.
func ProcessVMWritev(pid int, local, remote []Iovec) (int, error) {
	return processVM(unix.SYS_PROCESS_VM_WRITEV, pid, local, remote)
}

func processVM(nr uintptr, pid int, local, remote []Iovec) (int, error) {
	n, _, e := unix.Syscall6(nr, uintptr(pid),
		uintptr(unsafe.Pointer(unsafe.SliceData(local))), uintptr(len(local)),
		uintptr(unsafe.Pointer(unsafe.SliceData(remote))), uintptr(len(remote)), 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

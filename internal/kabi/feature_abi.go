package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd (include/uapi/linux/userfaultfd.h).
const (
	UFFD_API                    = 0xaa
	UFFD_USER_MODE_ONLY         = 1
	UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
	UFFD_FEATURE_WP_ASYNC       = 1 << 15
	UFFDIO_REGISTER_MODE_WP     = 1 << 1
	UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0

	UFFDIO_API          = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	UFFDIO_REGISTER     = 0xc020aa00 // _IOWR(0xaa, 0x00, struct uffdio_register)
	UFFDIO_WRITEPROTECT = 0xc018aa06 // _IOWR(0xaa, 0x06, struct uffdio_writeprotect)
)

// Userfaultfd is userfaultfd(2), which x/sys/unix has no wrapper for. flags
// take O_CLOEXEC, O_NONBLOCK and UFFD_USER_MODE_ONLY.
func Userfaultfd(flags int) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// UffdioAPI is struct uffdio_api.
type UffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// UffdioRange is struct uffdio_range.
type UffdioRange struct {
	Start, Len uint64
}

// UffdioRegister is struct uffdio_register.
type UffdioRegister struct {
	Range  UffdioRange
	Mode   uint64
	Ioctls uint64
}

// UffdioWriteprotect is struct uffdio_writeprotect.
type UffdioWriteprotect struct {
	Range UffdioRange
	Mode  uint64
}

// PAGEMAP_SCAN (include/uapi/linux/fs.h, Linux 6.7): an ioctl on
// /proc/PID/pagemap that returns page ranges by category.
const (
	PAGEMAP_SCAN = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)

	PAGE_IS_WPALLOWED  = 1 << 0
	PAGE_IS_WRITTEN    = 1 << 1
	PAGE_IS_FILE       = 1 << 2
	PAGE_IS_PRESENT    = 1 << 3
	PAGE_IS_SWAPPED    = 1 << 4
	PAGE_IS_PFNZERO    = 1 << 5
	PAGE_IS_HUGE       = 1 << 6
	PAGE_IS_SOFT_DIRTY = 1 << 7
)

// PmScanArg is struct pm_scan_arg.
type PmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

// PageRegion is struct page_region, one result of PAGEMAP_SCAN.
type PageRegion struct {
	Start, End, Categories uint64
}

// PagemapScan runs PAGEMAP_SCAN on an open /proc/PID/pagemap, filling out;
// it returns how many regions the kernel wrote.
func PagemapScan(fd int, a *PmScanArg, out []PageRegion) (int, error) {
	a.Size = uint64(unsafe.Sizeof(*a))
	a.Vec = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(out))))
	a.VecLen = uint64(len(out))
	n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), PAGEMAP_SCAN, uintptr(unsafe.Pointer(a)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// IoctlPtr runs an ioctl whose argument is a pointer to a fixed-size struct.
func IoctlPtr[T any](fd int, req uintptr, arg *T) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(arg)))
	if e != 0 {
		return e
	}
	return nil
}

// PrctlMmMapSize asks the kernel for sizeof(struct prctl_mm_map)
// (prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)); it changes nothing.
func PrctlMmMapSize() (uint32, error) {
	var size uint32
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_MM, PR_SET_MM_MAP_SIZE, uintptr(unsafe.Pointer(&size)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return size, nil
}

// Bit 55 of a /proc/PID/pagemap entry: the page was written since the last
// "echo 4 > clear_refs" (only with CONFIG_MEM_SOFT_DIRTY).
const PM_SOFT_DIRTY = 1 << 55

// File capabilities, the security.capability xattr
// (include/uapi/linux/capability.h): a little-endian u32 magic_etc, then
// two {permitted, inheritable} u32 pairs (low and high 32 capabilities),
// then, for revision 3, the u32 root uid of the owning user namespace.
const (
	VFS_CAP_REVISION_MASK   = 0xff000000
	VFS_CAP_REVISION_1      = 0x01000000
	VFS_CAP_REVISION_2      = 0x02000000
	VFS_CAP_REVISION_3      = 0x03000000
	VFS_CAP_FLAGS_EFFECTIVE = 0x000001
	XATTR_CAPS_SZ_1         = 12
	XATTR_CAPS_SZ_2         = 20
	XATTR_CAPS_SZ_3         = 24
)

// Seccomp BPF: one "return ALLOW" instruction, the smallest valid filter.
const (
	BPF_RET_K          = 0x06 // BPF_RET | BPF_K
	SECCOMP_RET_ALLOW  = 0x7fff0000
	SockFilterSize     = 8
	RseqOrigSize       = 32 // struct rseq as first registered (Linux 4.18)
	RseqGlibcSignature = 0x53053053
)

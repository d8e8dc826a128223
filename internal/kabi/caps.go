package kabi

import (
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Caps are one thread's capability sets as 64-bit masks (bit n is
// capability n, as in /proc/PID/status).
type Caps struct {
	Eff, Prm, Inh, Amb, Bnd uint64
}

// Has reports whether capability n (unix.CAP_*) is in the effective set.
func (c Caps) Has(n uintptr) bool { return c.Eff&(1<<n) != 0 }

// CapsetArgs are capset(2)'s header and data for version 3 (64-bit sets),
// laid out as the kernel reads them: an 8-byte header then two 12-byte
// words of {effective, permitted, inheritable}.
type CapsetArgs struct {
	Header unix.CapUserHeader
	Data   [2]unix.CapUserData
}

// CapsetDataOffset is where the data words start in CapsetArgs: capset's
// second argument points there.
const CapsetDataOffset = unsafe.Offsetof(CapsetArgs{}.Data)

// NewCapsetArgs builds capset's arguments for the calling thread (pid 0).
func NewCapsetArgs(c Caps) CapsetArgs {
	a := CapsetArgs{Header: unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}}
	for i := range 2 {
		a.Data[i] = unix.CapUserData{
			Effective:   uint32(c.Eff >> (32 * i)),
			Permitted:   uint32(c.Prm >> (32 * i)),
			Inheritable: uint32(c.Inh >> (32 * i)),
		}
	}
	return a
}

// capNames are the capabilities of include/uapi/linux/capability.h.
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// CapNames lists the capabilities of mask by name, comma-separated.
func CapNames(mask uint64) string {
	var out []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if i < len(capNames) {
			out = append(out, capNames[i])
		} else {
			out = append(out, "cap_"+strconv.Itoa(i))
		}
	}
	return strings.Join(out, ",")
}

// PtraceScope is kernel.yama.ptrace_scope: 0 classic ptrace permissions,
// 1 a tracer without CAP_SYS_PTRACE may attach only to its descendants,
// 2 only with CAP_SYS_PTRACE, 3 no attaching at all; -1 without Yama.
func PtraceScope() int {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// Securebits (include/uapi/linux/securebits.h): each flag at an even bit,
// its lock right above it. A locked flag can never change again.
const (
	SECBIT_NOROOT                = 1 << 0
	SECBIT_NO_SETUID_FIXUP       = 1 << 2
	SECBIT_KEEP_CAPS             = 1 << 4
	SECBIT_KEEP_CAPS_LOCKED      = 1 << 5
	SECBIT_NO_CAP_AMBIENT_RAISE  = 1 << 6
	SECBIT_EXEC_RESTRICT_FILE    = 1 << 8  // 6.14
	SECBIT_EXEC_DENY_INTERACTIVE = 1 << 10 // 6.14
	SECURE_ALL_BITS              = 0x555
	SECURE_ALL_LOCKS             = SECURE_ALL_BITS << 1
	SECURE_ALL                   = SECURE_ALL_BITS | SECURE_ALL_LOCKS
)

// Package kabi may import unsafe and issue raw syscalls; it still compares
// errors with errors.Is.
package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func Getpid() int {
	r, _, e := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	if e == unix.EINVAL { // want errcmp
		return -1
	}
	if e != 0 {
		return -1
	}
	return int(r)
}

func Addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

package feature

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// A *_unsafe.go file may convert pointers, but its syscalls still go
// through kabi.
func scan(b []byte) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, 0, 0, uintptr(unsafe.Pointer(&b[0]))) // want rawsyscall
	if e != 0 {
		return e
	}
	return nil
}

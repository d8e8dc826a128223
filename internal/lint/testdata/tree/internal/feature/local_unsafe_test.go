package feature

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A test that stands in for the kernel side issues whatever syscall it is
// asked for.
func TestLocal(t *testing.T) {
	var b [8]byte
	if _, _, e := unix.Syscall6(unix.SYS_READ, 0, uintptr(unsafe.Pointer(&b[0])), 8, 0, 0, 0); e != 0 {
		t.Log(e)
	}
}

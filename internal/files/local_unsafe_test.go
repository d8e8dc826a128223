package files

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// localProc is a Proc that is this test process itself: its syscalls run
// here, directly, so the kinds' restore halves can be tested without a
// stub or ptrace. Arguments get made-up addresses that Call replaces with
// the real ones of their buffers (kept alive in bufs): no pointer is ever
// made from an integer.
type localProc struct {
	bufs map[uint64][]byte
	next uint64
}

const fakeBase = 1 << 46

func newLocalProc() *localProc { return &localProc{bufs: map[uint64][]byte{}, next: fakeBase} }

func (l *localProc) Pid() int { return os.Getpid() }

func (l *localProc) Arg(b []byte) (uint64, error) {
	addr := l.next
	l.bufs[addr] = append(make([]byte, 0, len(b)+1), b...)
	l.next += 1 << 20
	return addr, nil
}

func (l *localProc) Str(s string) (uint64, error) { return l.Arg(append([]byte(s), 0)) }

func (l *localProc) Out(addr uint64, n int) ([]byte, error) {
	b, ok := l.bufs[addr]
	if !ok || n > len(b) {
		return nil, fmt.Errorf("out %#x: no argument there", addr)
	}
	return append([]byte(nil), b[:n]...), nil
}

func (l *localProc) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	var a [6]uintptr
	for i, v := range args {
		if b, ok := l.bufs[v]; ok {
			a[i] = uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		} else {
			a[i] = uintptr(v)
		}
	}
	r, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	if e != 0 {
		return 0, fmt.Errorf("%s in %d: %w", name, os.Getpid(), e)
	}
	return uint64(r), nil
}

package ptrace

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/cryo-project/cryo/internal/kabi"
)

// ReadMem copies len(b) bytes at addr of pid into b.
func ReadMem(pid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := kabi.ProcessVMReadv(pid, []kabi.Iovec{kabi.LocalIovec(b)}, []kabi.Iovec{{Base: addr, Len: uint64(len(b))}})
	runtime.KeepAlive(b)
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x of %d: %w", len(b), addr, pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("read %d bytes at %#x of %d: short read (%d)", len(b), addr, pid, n)
	}
	return nil
}

// Mem is /proc/PID/mem opened for writing: unlike process_vm_writev it writes
// through read-only mappings (the kernel uses FOLL_FORCE for it), which
// restore needs for text and rodata pages.
type Mem struct {
	pid int
	f   *os.File
}

// OpenMem opens /proc/pid/mem read-write.
func OpenMem(pid int) (*Mem, error) {
	f, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Mem{pid: pid, f: f}, nil
}

// WriteAt writes b at addr, whatever the mapping's protection.
func (m *Mem) WriteAt(b []byte, addr uint64) error {
	n, err := m.f.WriteAt(b, int64(addr))
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x of %d: %w", len(b), addr, m.pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("write %d bytes at %#x of %d: short write", len(b), addr, m.pid)
	}
	return nil
}

// ReadAt reads len(b) bytes at addr, whatever the mapping's protection.
func (m *Mem) ReadAt(b []byte, addr uint64) error {
	n, err := m.f.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	return fmt.Errorf("read %d bytes at %#x of %d: %w", len(b), addr, m.pid, err)
}

// Close closes the file.
func (m *Mem) Close() error { return m.f.Close() }

// WriteMem writes b at addr of pid with process_vm_writev (writable mappings only).
func WriteMem(pid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := kabi.ProcessVMWritev(pid, []kabi.Iovec{kabi.LocalIovec(b)}, []kabi.Iovec{{Base: addr, Len: uint64(len(b))}})
	runtime.KeepAlive(b)
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x of %d: %w", len(b), addr, pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("write %d bytes at %#x of %d: short write (%d)", len(b), addr, pid, n)
	}
	return nil
}

// WriteMemv writes bufs[i] at addrs[i] of pid, all in one process_vm_writev
// (writable mappings only; at most 1024 pieces, the kernel's UIO_MAXIOV).
func WriteMemv(pid int, addrs []uint64, bufs [][]byte) error {
	if len(addrs) != len(bufs) {
		return fmt.Errorf("write to %d: %d addresses for %d buffers", pid, len(addrs), len(bufs))
	}
	local := make([]kabi.Iovec, 0, len(bufs))
	remote := make([]kabi.Iovec, 0, len(bufs))
	want := 0
	for i, b := range bufs {
		if len(b) == 0 {
			continue
		}
		local = append(local, kabi.LocalIovec(b))
		remote = append(remote, kabi.Iovec{Base: addrs[i], Len: uint64(len(b))})
		want += len(b)
	}
	if len(remote) == 0 {
		return nil
	}
	n, err := kabi.ProcessVMWritev(pid, local, remote)
	runtime.KeepAlive(bufs)
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x of %d: %w", want, remote[0].Base, pid, err)
	}
	if n != want {
		return fmt.Errorf("write %d bytes at %#x of %d: short write (%d)", want, remote[0].Base, pid, n)
	}
	return nil
}

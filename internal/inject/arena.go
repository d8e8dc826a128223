package inject

import (
	"bytes"
	"fmt"

	"github.com/cryo-project/cryo/internal/ptrace"
)

// Arena is memory of the target that holds the arguments of injected calls
// (paths, structs, buffers the kernel fills). Allocations are a bump
// cursor: Task.Syscall resets it after every call, so an address is good
// for the next call only. Memory is not cleared: the result a call wrote
// can be read after it returns.
type Arena interface {
	// Alloc reserves n bytes aligned to align (a power of two; 16 if
	// smaller) and returns their address in the target.
	Alloc(n, align int) (uint64, error)
	// Put copies b into a new allocation and returns its address.
	Put(b []byte) (uint64, error)
	// Read returns n bytes at addr of the target.
	Read(addr uint64, n int) ([]byte, error)
	// Reset frees every allocation.
	Reset()
}

// PutString puts s, NUL-terminated, into a and returns its address.
func PutString(a Arena, s string) (uint64, error) {
	return a.Put(append([]byte(s), 0))
}

// bump hands out offsets in [0, size).
type bump struct {
	size, cursor uint64
}

func (b *bump) alloc(n, align int, what string) (uint64, error) {
	if align < 16 {
		align = 16
	}
	if n < 0 || align&(align-1) != 0 {
		return 0, fmt.Errorf("%s: allocation of %d bytes aligned to %d", what, n, align)
	}
	off := (b.cursor + uint64(align) - 1) &^ (uint64(align) - 1)
	if off+uint64(n) > b.size {
		return 0, fmt.Errorf("injected syscall arguments exceed the %d bytes of the %s", b.size, what)
	}
	b.cursor = off + uint64(n)
	return off, nil
}

func read(pid int, addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	return b, ptrace.ReadMem(pid, addr, b)
}

// Stack is the arena of a thread cryo dumps: bytes of its own stack, below
// the red zone, borrowed and put back exactly (PutBack).
//
// Safe at every instant: the x86-64 ABI lets a program keep data in the
// 128 bytes below rsp (the red zone) and nowhere below that, because a
// signal may arrive at any instruction and the kernel then writes its
// signal frame (well over StackSize bytes) right there. A program that
// works can therefore never depend on what lies below its red zone, so if
// cryo dies with arguments left in the arena, the thread runs on as
// correctly as if a signal had been handled. The bytes are put back all
// the same, so that the image and the released thread hold the stack
// exactly as it was.
type Stack struct {
	pid   int
	rsp   uint64
	addr  uint64 // lowest byte; 0 until first used
	saved []byte // what the arena held before its first use
	frame []byte // the trampoline frame written since then
	bump
}

// StackSize is the room a Stack lends: enough for the largest argument
// dump injects (a 128-byte siginfo).
const StackSize = 256

// redZone is the part of the stack below rsp that the x86-64 ABI lets leaf
// functions use without moving rsp.
const redZone = 128

// NewStack returns the arena below the red zone of a thread of pid that
// stopped with stack pointer rsp. Nothing is read or written until the
// first allocation.
func NewStack(pid int, rsp uint64) *Stack {
	return &Stack{pid: pid, rsp: rsp, bump: bump{size: StackSize}}
}

func (s *Stack) borrow() error {
	if s.saved != nil {
		return nil
	}
	// Right below the red zone the trampoline's frame (tramp_amd64.go),
	// below it the arena.
	addr := (s.rsp - redZone - frameSize - StackSize) &^ 15
	saved, err := read(s.pid, addr, int(s.rsp-redZone-addr))
	if err != nil {
		return fmt.Errorf("borrow stack below %#x: %w", s.rsp, err)
	}
	s.addr, s.saved = addr, saved
	return nil
}

// putFrame writes a trampoline frame where it goes, ending where the red
// zone begins, and returns its address. The frame is the same for every
// call of a thread (its own registers): it is written once per borrowing.
func (s *Stack) putFrame(f []byte) (uint64, error) {
	if err := s.borrow(); err != nil {
		return 0, err
	}
	at := s.rsp - redZone - frameSize
	if !bytes.Equal(f, s.frame) {
		if err := ptrace.WriteMem(s.pid, at, f); err != nil {
			return 0, err
		}
		s.frame = f
	}
	return at, nil
}

// Alloc implements Arena. The first allocation saves the bytes it borrows.
func (s *Stack) Alloc(n, align int) (uint64, error) {
	if err := s.borrow(); err != nil {
		return 0, err
	}
	off, err := s.alloc(n, align, "stack arena")
	if err != nil {
		return 0, err
	}
	return s.addr + off, nil
}

// Put implements Arena.
func (s *Stack) Put(b []byte) (uint64, error) {
	addr, err := s.Alloc(len(b), 0)
	if err != nil {
		return 0, err
	}
	return addr, ptrace.WriteMem(s.pid, addr, b)
}

// Read implements Arena.
func (s *Stack) Read(addr uint64, n int) ([]byte, error) { return read(s.pid, addr, n) }

// Reset implements Arena.
func (s *Stack) Reset() { s.cursor = 0 }

// PutBack writes back the bytes the arena borrowed; the next allocation
// borrows them again.
func (s *Stack) PutBack() error {
	if s.saved == nil {
		return nil
	}
	if err := ptrace.WriteMem(s.pid, s.addr, s.saved); err != nil {
		return err
	}
	s.addr, s.saved, s.frame, s.cursor = 0, nil, nil, 0
	return nil
}

// Scratch is the arena of a process cryo builds (a restore) or probes (a
// stub of `cryo check`): the scratch area, an anonymous private mapping of
// ScratchLen bytes, readable, writable and executable, that is no part of
// the image. Its first page holds the code injections run (code_amd64.go);
// then come the call area, which Alloc hands out for single calls, and the
// batch area, which only a running Batch writes. The tasks using it are
// PTRACE_O_EXITKILL'd: if cryo dies they die too, so nothing here needs
// putting back.
type Scratch struct {
	pid  int
	addr uint64
	bump
}

func newScratch(pid int, addr uint64) *Scratch {
	return &Scratch{pid: pid, addr: addr, bump: bump{size: batchArea - callArea}}
}

// Addr returns the address of the scratch area.
func (s *Scratch) Addr() uint64 { return s.addr }

// Fork returns the scratch area of pid, a child that the process of s
// forked: fork copies the area, code included, to the same address.
func (s *Scratch) Fork(pid int) *Scratch { return newScratch(pid, s.addr) }

// Alloc implements Arena, in the call area.
func (s *Scratch) Alloc(n, align int) (uint64, error) {
	off, err := s.alloc(n, align, "scratch call area")
	if err != nil {
		return 0, err
	}
	return s.addr + callArea + off, nil
}

// Put implements Arena: one process_vm_writev.
func (s *Scratch) Put(b []byte) (uint64, error) {
	addr, err := s.Alloc(len(b), 0)
	if err != nil {
		return 0, err
	}
	return addr, ptrace.WriteMem(s.pid, addr, b)
}

// Read implements Arena.
func (s *Scratch) Read(addr uint64, n int) ([]byte, error) { return read(s.pid, addr, n) }

// Reset implements Arena.
func (s *Scratch) Reset() { s.cursor = 0 }

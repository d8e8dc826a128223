// Package stub generates the tiny static ELF executable that restore starts
// for each process and then turns, by injected syscalls, into the process
// of the image. It has no libc and no data: one page of code that loops on
// pause(2), loaded at an address the caller chooses so that it collides
// with nothing the image will map.
package stub

import (
	"encoding/binary"
	"fmt"
)

const (
	ehdrSize = 64
	phdrSize = 56
	codeOff  = ehdrSize + phdrSize
)

// code loops forever on pause(): "mov eax, 34; syscall; jmp back".
var code = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, SYS_pause
	0x0f, 0x05, // syscall
	0xeb, 0xf7, // jmp -9
}

// SyscallOffset is the offset of the syscall instruction from the load
// address: the first injections go through it.
const SyscallOffset = codeOff + 5

// Build returns an ELF executable that loads at base (page aligned).
func Build(base uint64) ([]byte, error) {
	if base&0xfff != 0 || base < 0x10000 {
		return nil, fmt.Errorf("stub base %#x: not a page-aligned address above mmap_min_addr", base)
	}
	size := codeOff + len(code)
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+codeOff) // entry
	le.PutUint64(b[32:], ehdrSize)     // phoff
	le.PutUint16(b[52:], ehdrSize)
	le.PutUint16(b[54:], phdrSize)
	le.PutUint16(b[56:], 1) // phnum
	le.PutUint16(b[58:], 64)
	ph := b[ehdrSize:]
	le.PutUint32(ph[0:], 1)     // PT_LOAD
	le.PutUint32(ph[4:], 5)     // PF_R|PF_X
	le.PutUint64(ph[8:], 0)     // offset
	le.PutUint64(ph[16:], base) // vaddr
	le.PutUint64(ph[24:], base) // paddr
	le.PutUint64(ph[32:], uint64(size))
	le.PutUint64(ph[40:], uint64(size))
	le.PutUint64(ph[48:], 0x1000)
	copy(b[codeOff:], code)
	return b, nil
}

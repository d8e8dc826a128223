package inject

import (
	"encoding/binary"
	"fmt"
)

// The code at the start of every scratch area, generated here byte by byte
// as package stub generates the stub: cryo compiles nothing for its targets.
//
//	offset   what
//	0x00     syscall; int3           one injected call: one ptrace stop
//	0x10     the batch loop          a table of calls: one ptrace stop
//	0x100    the call area           arguments of one call (Scratch.Alloc)
//	0x10000  the batch area          a batch's table and arguments
//	0x40000  end
const (
	callCode   = 0x00
	batchCode  = 0x10
	codeSize   = 0x100
	callArea   = codeSize
	batchArea  = 0x10000
	ScratchLen = 0x40000 // bytes of a scratch area
)

// A batch table entry, as the loop reads it. 64 bytes, so that an index is
// a shift away from an address:
//
//	+0   u32 syscall number
//	+4   u32 flags (entryTolerate)
//	+8   u64 arguments 1-6 (rdi, rsi, rdx, r10, r8, r9)
//	+56  i64 result (rax), written by the loop
const (
	entrySize     = 64
	entryFlags    = 4
	entryArgs     = 8
	entryResult   = 56
	entryTolerate = 1 // an error result does not stop the batch
)

// asm assembles the few instructions of the batch loop, with rel8 jumps
// to labels resolved once every instruction's length is known.
type asm struct {
	code    []byte
	labels  map[string]int
	fixups  []fixup
	listing []insn // what each instruction is, checked against objdump by a test
}

type insn struct {
	off, len int
	text     string // Intel syntax, as objdump -M intel prints it
	target   string // the label a jump goes to
}

type fixup struct {
	at    int // offset of the rel8 byte
	label string
}

func (a *asm) label(name string) { a.labels[name] = len(a.code) }

// op appends one instruction; text is its assembly, for the reader.
func (a *asm) op(text string, b ...byte) {
	a.listing = append(a.listing, insn{off: len(a.code), len: len(b), text: text})
	a.code = append(a.code, b...)
}

// jump appends a two-byte jump (opcode, rel8) to label.
func (a *asm) jump(mnemonic string, opcode byte, label string) {
	a.op(mnemonic, opcode, 0)
	a.listing[len(a.listing)-1].target = label
	a.fixups = append(a.fixups, fixup{at: len(a.code) - 1, label: label})
}

func (a *asm) bytes() ([]byte, error) {
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("batch loop: no label %q", f.label)
		}
		rel := to - (f.at + 1)
		if rel < -128 || rel > 127 {
			return nil, fmt.Errorf("batch loop: jump to %q out of rel8 range", f.label)
		}
		a.code[f.at] = byte(int8(rel))
	}
	return a.code, nil
}

// batchLoop is the code a batch runs. On entry (registers set by Batch.Run)
// rbx points at the first table entry and r12 just past the last. Each
// entry's call is made with the syscall ABI's registers; its result goes
// back into the entry. The loop stops at the first error result (-4095 to
// -1, as the kernel returns them) of an entry not flagged entryTolerate,
// with rbx on that entry, or after the last entry with rbx == r12, and
// then executes int3: cryo reads the registers at that one stop and knows
// how far the batch went.
//
// Only rax, rcx and r11 change across a syscall (rcx and r11 are the
// instruction's own), so rbx and r12 need no saving, and an entry
// interrupted by a signal that cryo suppresses is restarted by the kernel
// with its arguments still in their registers (rip rewound to the syscall
// instruction, rax = orig_rax). The stack is never touched.
func batchLoop() ([]byte, error) {
	b, _, _, err := assembleLoop()
	return b, err
}

// assembleLoop returns the loop, what each instruction is, and the labels'
// offsets (for the test that disassembles it).
func assembleLoop() ([]byte, []insn, map[string]int, error) {
	a := &asm{labels: map[string]int{}}
	a.label("loop")
	a.op("cmp rbx, r12", 0x4c, 0x39, 0xe3)       // REX.WR 39 /r: flags of rbx - r12
	a.jump("jae", 0x73, "done")                  // unsigned rbx >= r12: every entry ran
	a.op("mov eax, dword ptr [rbx]", 0x8b, 0x03) // the number, zero-extended into rax
	a.op("mov rdi, qword ptr [rbx+0x8]", 0x48, 0x8b, 0x7b, entryArgs)
	a.op("mov rsi, qword ptr [rbx+0x10]", 0x48, 0x8b, 0x73, entryArgs+8)
	a.op("mov rdx, qword ptr [rbx+0x18]", 0x48, 0x8b, 0x53, entryArgs+16)
	a.op("mov r10, qword ptr [rbx+0x20]", 0x4c, 0x8b, 0x53, entryArgs+24)
	a.op("mov r8, qword ptr [rbx+0x28]", 0x4c, 0x8b, 0x43, entryArgs+32)
	a.op("mov r9, qword ptr [rbx+0x30]", 0x4c, 0x8b, 0x4b, entryArgs+40)
	a.op("syscall", 0x0f, 0x05)
	a.op("mov qword ptr [rbx+0x38], rax", 0x48, 0x89, 0x43, entryResult)
	// REX.W 3D id: the immediate is sign-extended, so this is -4095.
	a.op("cmp rax, 0xfffffffffffff001", 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff)
	a.jump("jb", 0x72, "next") // unsigned below -4095: not an errno
	a.op("test byte ptr [rbx+0x4], 0x1", 0xf6, 0x43, entryFlags, entryTolerate)
	a.jump("je", 0x74, "done") // (jz) an error the entry does not tolerate: stop on it
	a.label("next")
	a.op("add rbx, 0x40", 0x48, 0x83, 0xc3, entrySize)
	a.jump("jmp", 0xeb, "loop")
	a.label("done")
	a.op("int3", 0xcc)
	b, err := a.bytes()
	return b, a.listing, a.labels, err
}

// scratchCode returns the code page of a scratch area (offsets above), and
// the offset of the batch loop's int3.
func scratchCode() ([]byte, uint64, error) {
	loop, err := batchLoop()
	if err != nil {
		return nil, 0, err
	}
	if batchCode+len(loop) > codeSize {
		return nil, 0, fmt.Errorf("batch loop of %d bytes does not fit", len(loop))
	}
	b := make([]byte, codeSize)
	copy(b[callCode:], []byte{0x0f, 0x05, 0xcc}) // syscall; int3
	copy(b[batchCode:], loop)
	return b, batchCode + uint64(len(loop)) - 1, nil
}

// batchTrap is the offset of the batch loop's int3 in a scratch area.
var batchTrap = func() uint64 {
	_, trap, err := scratchCode()
	if err != nil {
		panic(err) // the code above is fixed: a test builds it
	}
	return trap
}()

// putEntry encodes one table entry into b.
func putEntry(b []byte, nr, flags uint32, args *[6]uint64) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], nr)
	le.PutUint32(b[entryFlags:], flags)
	for i, a := range args {
		le.PutUint64(b[entryArgs+8*i:], a)
	}
	le.PutUint64(b[entryResult:], 0)
}

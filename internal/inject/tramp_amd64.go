package inject

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/ptrace"
)

// The return trampoline of a borrowed task. A call injected through the
// syscall instruction of [vdso] leaves the thread, for the instants of the
// call, with registers that are not its own and an instruction pointer in
// the middle of the vdso: if cryo dies then (SIGKILL, the OOM killer), the
// kernel detaches the thread and it runs on from there, into the vdso's
// next instructions with those registers, and crashes. Killing the dump's
// worker at random moments killed 27 targets in 300 with SIGSEGV.
//
// The trampoline makes every instant of a call safe to run untraced. It is
// a few bytes of code cryo writes into the zeros that pad the last page of
// the process's [vdso] (InstallTrampoline), through /proc/PID/mem:
//
//	syscall                 the injected call
//	rt_sigprocmask(SIG_SETMASK, frame's mask, NULL, 8)
//	pop (the mask)
//	pop r15 ... rax         the thread's own general registers
//	popfq                   its own flags
//	ret 0x80                its own rip, and rsp back above the red zone
//
// Before each call cryo writes a frame of the thread's own registers (in
// the form that resumes it, ptrace.ResumeRegs) and signal mask just below
// its red zone and points rsp at it. Traced, the call stops at its syscall
// exit, before anything after it, and cryo puts the registers and the
// mask back itself. Untraced, the thread makes the call, takes back its
// own signal mask (cryo blocks every signal for the instants of a call,
// ptrace.Task.QuietSignals: killing the dump's worker left 2 targets in 80
// with every signal blocked before this), pops its registers, and returns
// to exactly where it was: the frame lies below the red zone, which the
// program never counts on (a signal frame could land there at any
// instant), and `ret 0x80` takes rip from just below the red zone and
// leaves rsp where it was. A call's side effects stay, as they would had
// cryo lived.
//
// Frame, from its lowest address: sigmask r15 r14 r13 r12 r11 r10 r9 r8
// rdi rsi rbp rdx rcx rbx rax rflags rip, 18 words, ending at rsp-128.

// frameSize is the bytes of a trampoline frame.
const frameSize = 18 * 8

// trampoline assembles the code above, with its listing for the test that
// disassembles it.
func trampoline() ([]byte, []insn) {
	a := &asm{labels: map[string]int{}}
	a.op("syscall", 0x0f, 0x05)
	a.op("mov eax,0xe", 0xb8, unix.SYS_RT_SIGPROCMASK, 0, 0, 0)
	a.op("mov edi,0x2", 0xbf, unix.SIG_SETMASK, 0, 0, 0)
	a.op("mov rsi,rsp", 0x48, 0x89, 0xe6)
	a.op("xor edx,edx", 0x31, 0xd2)
	a.op("mov r10d,0x8", 0x41, 0xba, 8, 0, 0, 0)
	a.op("syscall", 0x0f, 0x05)
	a.op("pop rax", 0x58) // the mask, rax's own comes later
	for _, r := range []struct {
		name string
		b    []byte
	}{
		{"r15", []byte{0x41, 0x5f}}, {"r14", []byte{0x41, 0x5e}}, {"r13", []byte{0x41, 0x5d}}, {"r12", []byte{0x41, 0x5c}},
		{"r11", []byte{0x41, 0x5b}}, {"r10", []byte{0x41, 0x5a}}, {"r9", []byte{0x41, 0x59}}, {"r8", []byte{0x41, 0x58}},
		{"rdi", []byte{0x5f}}, {"rsi", []byte{0x5e}}, {"rbp", []byte{0x5d}}, {"rdx", []byte{0x5a}},
		{"rcx", []byte{0x59}}, {"rbx", []byte{0x5b}}, {"rax", []byte{0x58}},
	} {
		a.op("pop "+r.name, r.b...)
	}
	a.op("popf", 0x9d) // objdump -M intel says popf for 9d in 64-bit mode
	a.op("ret 0x80", 0xc2, 0x80, 0x00)
	b, _ := a.bytes() // no jumps
	return b, a.listing
}

// trampFrame encodes r and mask as the frame the trampoline pops.
func trampFrame(r *unix.PtraceRegs, mask uint64) []byte {
	b := make([]byte, frameSize)
	for i, v := range []uint64{mask, r.R15, r.R14, r.R13, r.R12, r.R11, r.R10, r.R9, r.R8, r.Rdi, r.Rsi, r.Rbp, r.Rdx, r.Rcx, r.Rbx, r.Rax, r.Eflags, r.Rip} {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// Trampoline is the return trampoline of one process.
type Trampoline struct {
	pid  int
	addr uint64
	was  []byte // the bytes it took the place of
}

// trampSlot is the bytes at the end of [vdso] the trampoline takes.
const trampSlot = 64

// InstallTrampoline writes the return trampoline into the last bytes of
// the [vdso] of process pid, which spans [start, start+len(vdso)) and
// holds vdso: past the end of the vdso's ELF image its last page is
// zeros, which nothing executes or reads, so no mapping is added and no
// call is injected to add one. Writing through /proc/PID/mem gives the
// process a private copy of that page, as a debugger's breakpoint in the
// vdso does; Remove writes the zeros back. An error says there is no room
// (the image fills its last page): cryo then injects through the vdso
// alone.
func InstallTrampoline(pid int, start uint64, vdso []byte) (*Trampoline, error) {
	code, _ := trampoline()
	n := len(vdso)
	if n < trampSlot || len(code) > trampSlot {
		return nil, fmt.Errorf("[vdso] of %d: too small for a trampoline", pid)
	}
	for _, b := range vdso[n-trampSlot:] {
		if b != 0 {
			return nil, fmt.Errorf("[vdso] of %d: its last %d bytes are not padding", pid, trampSlot)
		}
	}
	tr := &Trampoline{pid: pid, addr: start + uint64(n-trampSlot), was: append([]byte(nil), vdso[n-trampSlot:]...)}
	if err := tr.write(code); err != nil {
		return nil, err
	}
	return tr, nil
}

func (tr *Trampoline) write(b []byte) error {
	m, err := ptrace.OpenMem(tr.pid)
	if err != nil {
		return fmt.Errorf("cryo's return trampoline: %w", err)
	}
	defer m.Close()
	if err := m.WriteAt(b, tr.addr); err != nil { // through the page's read-only protection
		return fmt.Errorf("cryo's return trampoline: %w", err)
	}
	return nil
}

// Addr is where the trampoline's syscall instruction is.
func (tr *Trampoline) Addr() uint64 { return tr.addr }

// Remove puts back the bytes the trampoline took. No task may be using it.
func (tr *Trampoline) Remove() error { return tr.write(tr.was) }

// UseTrampoline makes the borrowed task t inject through tr (nil: back to
// the syscall instruction it had, vdso's).
func (t *Task) UseTrampoline(tr *Trampoline) {
	if tr == nil {
		t.tramp = 0
		return
	}
	t.tramp = tr.addr
}

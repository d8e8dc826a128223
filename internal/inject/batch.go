package inject

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/ptrace"
)

// Batch is a list of syscalls run in a built task in one ptrace stop per
// table fill: cryo writes the table (and the arguments its entries point
// to) into the scratch area's batch area with one process_vm_writev, runs
// the batch loop (code_amd64.go) from one PTRACE_CONT to its int3, and
// reads back how far it went and every result with one process_vm_readv.
//
// The steps run in the order they were added, each with the arguments it
// was given: a step's arguments cannot depend on an earlier step's result.
// Calls that do (an fd that an open returns) are made with Task.Call
// before the batch is built. The first step that fails stops the batch
// unless it was marked Tolerate; the steps after it do not run.
//
// A batch is built, run once, and then read (Step.Result). Its arguments
// live in the batch area only, apart from the call area single calls use,
// so single calls may be made while a batch is being built.
type Batch struct {
	t     *Task
	steps []step
	fills []fill
	err   error // from building: reported by Run
	run   bool
}

type step struct {
	nr    uint32
	flags uint32
	args  [6]uint64
	name  string
	namef func() string
	data  []byte // copied to at when the step's fill is written
	at    uint64
	ret   int64
	ran   bool
}

// fill is a run of steps whose entries and data fit the batch area at once:
// entries grow up from its start, data down from its end.
type fill struct {
	first, n    int
	table, data uint64 // bytes used
}

// Step is one step of a batch.
type Step struct {
	b *Batch
	i int
}

// forbidden are the syscalls a batch refuses: a new task would start in
// the middle of the loop with a copy of its registers, and the others never
// return to it.
var forbidden = map[uintptr]string{
	unix.SYS_CLONE: "clone", unix.SYS_CLONE3: "clone3", unix.SYS_FORK: "fork", unix.SYS_VFORK: "vfork",
	unix.SYS_EXECVE: "execve", unix.SYS_EXECVEAT: "execveat", unix.SYS_EXIT: "exit",
	unix.SYS_EXIT_GROUP: "exit_group", unix.SYS_RT_SIGRETURN: "rt_sigreturn",
}

// Batch starts an empty batch for t, which must be a built task (its
// scratch area holds the loop).
func (t *Task) Batch() *Batch {
	b := &Batch{t: t}
	switch {
	case t.scratch == nil:
		b.err = fmt.Errorf("task %d: a batch needs a scratch area, and this task has none", t.Tid)
	case !t.trap:
		// The loop ends on an int3, which the caller chose to avoid
		// (SetSyscallIP): the SIGTRAP it forces has side effects.
		b.err = fmt.Errorf("task %d injects without an int3: a batch would run one", t.Tid)
	}
	return b
}

const batchLen = ScratchLen - batchArea

// Add queues syscall nr with args; name says what the step does in the
// error of a failing step ("munmap 0x7f12000-0x7f13000").
func (b *Batch) Add(name string, nr uintptr, args ...uint64) Step {
	return b.add(name, nr, nil, args, nil)
}

// AddArg queues syscall nr whose arguments point into data: data is
// copied into the batch area with the table, and args gets its address
// there (16-byte aligned). data is copied when AddArg is called, before
// its address is known, so it cannot point into itself: a struct holding
// a pointer to more data (a sock_fprog) is passed with single calls.
func (b *Batch) AddArg(name string, data []byte, nr uintptr, args func(addr uint64) []uint64) Step {
	return b.add(name, nr, data, nil, args)
}

func (b *Batch) add(name string, nr uintptr, data []byte, a []uint64, args func(uint64) []uint64) Step {
	st := Step{b: b, i: len(b.steps)}
	if b.err != nil {
		return st
	}
	if b.run {
		b.err = fmt.Errorf("batch of %d steps: step %q added after the batch ran", len(b.steps), name)
		return st
	}
	if what, ok := forbidden[nr]; ok {
		b.err = fmt.Errorf("%s: %s cannot run in a batch", name, what)
		return st
	}
	dlen := (uint64(len(data)) + 15) &^ 15
	if entrySize+dlen > batchLen {
		b.err = fmt.Errorf("%s: %d bytes of arguments do not fit a batch", name, len(data))
		return st
	}
	f := b.cur()
	if f == nil || f.table+f.data+entrySize+dlen > batchLen {
		b.fills = append(b.fills, fill{first: len(b.steps)})
		f = b.cur()
	}
	s := step{nr: uint32(nr), name: name}
	if len(data) > 0 {
		f.data += dlen
		s.at = b.t.scratch.addr + ScratchLen - f.data
		s.data = append([]byte(nil), data...)
	}
	if args != nil {
		a = args(s.at)
	}
	if len(a) > 6 {
		b.err = fmt.Errorf("%s: %d arguments", name, len(a))
		return st
	}
	copy(s.args[:], a)
	f.table += entrySize
	f.n++
	b.steps = append(b.steps, s)
	return st
}

func (b *Batch) cur() *fill {
	if len(b.fills) == 0 {
		return nil
	}
	return &b.fills[len(b.fills)-1]
}

// Len returns the number of steps queued.
func (b *Batch) Len() int { return len(b.steps) }

// Fills returns the number of table fills (ptrace stops) the batch takes.
func (b *Batch) Fills() int { return len(b.fills) }

// Tolerate makes an error of this step its result rather than the end of
// the batch.
func (s Step) Tolerate() Step {
	if s.i < len(s.b.steps) {
		s.b.steps[s.i].flags |= entryTolerate
	}
	return s
}

// Describe names the step with what f returns, built only if the step
// fails: a batch of ten thousand steps should not format ten thousand
// messages that nobody reads.
func (s Step) Describe(f func() string) Step {
	if s.i < len(s.b.steps) {
		s.b.steps[s.i].namef = f
	}
	return s
}

// Result returns the step's result once the batch ran, or its errno.
func (s Step) Result() (uint64, error) {
	if s.i >= len(s.b.steps) || !s.b.steps[s.i].ran {
		return 0, fmt.Errorf("batch step %d did not run", s.i)
	}
	ret := s.b.steps[s.i].ret
	if errno, ok := errnoOf(ret); ok {
		return 0, &StepError{Index: s.i, Steps: len(s.b.steps), Name: s.b.steps[s.i].String(), Tid: s.b.t.Tid, Errno: errno}
	}
	return uint64(ret), nil
}

func (s *step) String() string {
	if s.namef != nil {
		return s.namef()
	}
	return s.name
}

// StepError is the failure of one step of a batch. The steps before it ran
// (and succeeded, or failed and were tolerated); the steps after it did not.
type StepError struct {
	Index int // the step's place in the batch, from 0
	Steps int // how many steps the batch has
	Name  string
	Tid   int
	Errno unix.Errno
}

func (e *StepError) Error() string {
	return fmt.Sprintf("%s in %d (step %d of %d of a batch): %v", e.Name, e.Tid, e.Index+1, e.Steps, e.Errno)
}

// Unwrap makes errors.Is(err, unix.EEXIST) & co. work on a step's error.
func (e *StepError) Unwrap() error { return e.Errno }

// Run runs the batch: every fill in turn, each in one ptrace stop. It
// returns a *StepError for the first step that failed untolerated, after
// which nothing more runs. A batch runs once.
func (b *Batch) Run() error {
	if b.err != nil {
		return b.err
	}
	if b.run {
		return fmt.Errorf("batch of %d steps ran already", len(b.steps))
	}
	b.run = true
	if len(b.steps) == 0 {
		return nil
	}
	buf := make([]byte, batchLen)
	for i := range b.fills {
		if err := b.runFill(&b.fills[i], buf); err != nil {
			return err
		}
	}
	return nil
}

// runFill writes one fill, runs the loop over it and reads back its results.
func (b *Batch) runFill(f *fill, buf []byte) error {
	s := b.t.scratch
	base := s.addr + batchArea
	steps := b.steps[f.first : f.first+f.n]
	for i := range steps {
		st := &steps[i]
		putEntry(buf[i*entrySize:], st.nr, st.flags, &st.args)
		if len(st.data) > 0 {
			copy(buf[st.at-base:], st.data)
		}
	}
	table := uint64(f.n) * entrySize
	dataAt := s.addr + ScratchLen - f.data
	if err := ptrace.WriteMemv(s.pid, []uint64{base, dataAt}, [][]byte{buf[:table], buf[dataAt-base:]}); err != nil {
		return fmt.Errorf("write a batch of %d steps into %d: %w", f.n, b.t.Tid, err)
	}
	r := b.t.Regs
	r.Rip, r.Orig_rax, r.Rax = s.addr+batchCode, ^uint64(0), 0
	r.Rbx, r.R12 = base, base+table
	out, err := b.t.RunToTrap(&r, s.addr+batchTrap)
	if err != nil {
		return fmt.Errorf("batch of %d steps from %q: %w", f.n, steps[0].String(), err)
	}
	if out.Rbx < base || out.Rbx > base+table || (out.Rbx-base)%entrySize != 0 {
		return fmt.Errorf("batch loop in %d stopped with rbx %#x, outside its table %#x-%#x", b.t.Tid, out.Rbx, base, base+table)
	}
	reached := int((out.Rbx - base) / entrySize) // == f.n when every step ran
	ran := min(reached+1, f.n)
	if err := ptrace.ReadMem(s.pid, base, buf[:ran*entrySize]); err != nil {
		return fmt.Errorf("read the results of a batch in %d: %w", b.t.Tid, err)
	}
	for i := 0; i < ran; i++ {
		steps[i].ret = int64(binary.LittleEndian.Uint64(buf[i*entrySize+entryResult:]))
		steps[i].ran = true
	}
	if reached == f.n {
		return nil
	}
	st := &steps[reached]
	errno, ok := errnoOf(st.ret)
	if !ok || st.flags&entryTolerate != 0 {
		return fmt.Errorf("batch loop in %d stopped at step %d (%s) with result %d, which is no error it stops for", b.t.Tid, f.first+reached, st.String(), st.ret)
	}
	return &StepError{Index: f.first + reached, Steps: len(b.steps), Name: st.String(), Tid: b.t.Tid, Errno: errno}
}

// Package inject is the one way cryo runs syscalls inside a stopped task:
// single calls, batches of calls in one ptrace stop, and the arenas in the
// task's memory that their arguments live in. Dump, restore and `cryo
// check` all inject through it; nothing else resumes a task on registers
// that are not its own.
//
// It is a layer over package ptrace, which owns a tracee's life (seize,
// stop, wait, registers, release) and gives this package one primitive:
// resume a stopped task from given registers until an int3 (RunToTrap), or
// through one syscall's entry and exit stops (RunSyscall). Everything about
// what runs in the task (which instruction, which registers, where the
// arguments go, the code a batch runs) is here.
//
// # Two kinds of task
//
// A borrowed task (Borrowed) belongs to a process cryo dumps: it runs on
// after cryo lets go, or after cryo dies, when the kernel detaches it and
// lets it run with whatever registers and memory it has at that instant.
// Every instant must therefore be safe to run as is. Its registers are set
// for an injected call only for the instants of that syscall and put back,
// in a form that resumes it correctly, as soon as it returns; the syscall
// instruction is one in [vdso] (no byte of the program's code changes),
// stepped over with PTRACE_SYSCALL; and its arguments go in a Stack arena,
// bytes below its red zone that the ABI gives the program no claim on (a
// signal frame may land there at any instant), put back exactly. For the
// instants of a call itself, the return trampoline (tramp_amd64.go), a few
// bytes cryo writes into the padding at the end of [vdso], takes a thread
// whose tracer died mid-call back to its own registers and instruction.
//
// A built task (Built) belongs to a process cryo builds (a restore) or to
// a probe stub. It is seized with PTRACE_O_EXITKILL and dies with cryo, so
// it keeps injected registers between calls. Its process has a Scratch
// arena: an RWX mapping whose first page holds code cryo generates
// (code_amd64.go): "syscall; int3", so that a call takes one ptrace stop,
// and the batch loop. StartStub starts a stub, seizes it and sets up its
// scratch area; restore forks every process it builds from one, and each
// inherits the area.
//
// # Arenas
//
// An Arena hands out addresses with a bump cursor that every call resets:
// arguments are good for the next call. Results the kernel writes there
// can be read after the call returns.
//
// # Batches
//
// A Batch runs many independent syscalls of a built task in one ptrace
// stop per table fill: one process_vm_writev writes a table of entries
// {nr, flags, 6 arguments, result} and the data they point to into the
// scratch area's batch area, one PTRACE_CONT runs the loop over it, which
// stops at the first error an entry does not tolerate, and one
// process_vm_readv reads back the results. A failure is a *StepError that
// names the step and wraps its errno. Signals that arrive meanwhile are
// handled as for single calls (see ptrace.Task.RunToTrap).
//
// # Threading
//
// Everything here is ptrace and must run on the goroutine locked to the
// tracer thread (see package ptrace).
package inject

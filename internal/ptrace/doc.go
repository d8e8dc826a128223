// Package ptrace drives stopped tasks from outside: seizing and interrupting
// threads, reading and writing their registers, and running syscalls inside
// them ("injection").
//
// # Threading
//
// The kernel ties a tracee to the tracer *thread*, not the process, and Go
// moves goroutines between threads. Every function here must therefore be
// called from one goroutine that has called runtime.LockOSThread and keeps
// the lock for as long as it traces anything; dump and restore run their
// whole ptrace phase on such a goroutine. Reading or writing memory with
// process_vm_readv/writev is not tied to the tracer and may happen elsewhere.
//
// # Injection
//
// A syscall is run in a stopped task by pointing rip at any "syscall"
// instruction (0f 05) the task can execute, loading rax and the argument
// registers, and stepping with PTRACE_SYSCALL to the syscall-exit stop, where
// rax holds the result. Stepping to syscall stops, rather than placing a
// breakpoint after the instruction, means no byte of the task's memory has to
// change: dump finds the instruction inside [vdso]. orig_rax is set to -1 so
// the kernel's syscall-restart logic, which looks at orig_rax when a stopped
// task resumes, leaves the injected registers alone.
package ptrace

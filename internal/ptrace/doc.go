// Package ptrace drives tracees from outside: seizing and interrupting
// threads, waiting for their stops, reading and writing their registers
// and memory, releasing them, and killing and reaping what cryo started.
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
// # Waiting
//
// One wait loop (wait, bounded by StopTimeout) serves every stop, event
// and exit, and Kill and Reap are the only other waiters: a second loop
// (exec.Cmd.Wait) would steal notifications, and traced threads stay
// zombies until their tracer reaps them.
//
// # Injection
//
// Running code in a stopped task is package inject's job. This package
// gives it one primitive, Task.RunToTrap (resume from given registers
// until an int3 the caller placed; RunSyscall for an instruction with no
// int3 after it), which handles what the kernel may report first: fork and
// clone events, and signals, which are recorded in Task.Caught and
// suppressed so that no handler of the program runs on injected registers.
// Nothing else may resume a task on registers that are not its own.
package ptrace

// Package dump checkpoints a running process: it freezes every thread,
// reads the process's state from outside (/proc, ptrace, process_vm_readv,
// pidfd_getfd and a few syscalls injected into the stopped threads), writes
// it as CRIU-format images, and then kills the process or lets it go on.
//
// # Leaving the target unharmed
//
// Until the images are committed nothing is irreversible: every step that
// changes the target (registers set for an injection, bytes of stack used as
// scratch for a syscall's arguments, signals dequeued while stopping it) is
// recorded on the task and undone by release, which runs on every path out
// of Run. If cryo itself is killed, the kernel detaches the tracees; the
// scratch bytes sit below the red zone of each thread's stack, memory the
// program has no claim on, and injected registers are never left in place
// because they are only set while the thread is in a ptrace stop, which
// detach ends by resuming the thread with its saved registers... except in
// the instant between setting them and stepping; see release.
//
// It does not restore anything and owns no image format details beyond
// filling CRIU's messages: framing and integrity belong to package image.
package dump

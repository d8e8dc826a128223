// Package dump checkpoints a process tree: it freezes every thread of the
// process named and of all its descendants, reads their state from outside
// (/proc, ptrace, process_vm_readv, PAGEMAP_SCAN, pidfd_getfd, sock_diag,
// and a few syscalls injected into the stopped threads), writes it as
// CRIU-format images, and then kills the tree or lets it go on.
//
// # Leaving the target unharmed
//
// Until the images are committed nothing is irreversible. A thread's
// registers are set for an injected syscall only for the instants of that
// syscall: they are put back, in a form that resumes the thread correctly,
// as soon as it returns. The syscall instruction used is one inside [vdso],
// so no byte of the program's code is ever changed; arguments go in scratch
// bytes below the red zone of the thread's stack, put back before memory is
// read and again on release. Signals the kernel dequeued while stopping a
// thread are queued again, siginfo intact. Every path out of Run releases
// the tree as it was and removes the partial image.
//
// If cryo itself is killed, the kernel detaches the tracees. To keep that
// from ever happening in the middle of an injection, the command line runs
// the dump in a worker process: killing the `cryo dump` a user started
// makes the worker abort at its next step and release the tree (see
// Options.Context).
//
// File descriptors are package files' (one module per kind of fd); the
// names of the image files are package imageset's; framing and integrity
// are package image's. This package fills CRIU's messages for the tasks
// and their memory, and restores nothing.
package dump

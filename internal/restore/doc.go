// Package restore rebuilds a process from a dump's images.
//
// # Stages
//
//  1. load: read and check every image before anything is started (pids
//     free, CPU features, vdso, files present). A bad image stops here.
//  2. birth: start a stub (package stub), seize it, inject clone3 with
//     set_tid so the root gets its dumped pid, and kill the stub: cryo is a
//     child subreaper, so the root becomes cryo's own child.
//  3. memory, parents first: unmap all of the root but one scratch area, map
//     every VMA of the image at its address, fill the pages, re-create the
//     vdso with arch_prctl(ARCH_MAP_VDSO_64), and set the mm fields and exe
//     link with prctl(PR_SET_MM_MAP). Each child is then forked from its
//     restored parent (clone3 with set_tid injected into the parent), so it
//     inherits the parent's memory copy-on-write: it keeps the VMAs it had
//     inherited, with the pages still shared, and rebuilds only the rest.
//     Sessions are set as processes are born; groups once all exist, with
//     helper processes standing in for leaders that had exited.
//  4. files, task state and threads of every process: package files
//     rebuilds the fd tables (objects processes share are made once and
//     taken over by the others with pidfd_getfd run by the receiving
//     process); shared memory is mapped through /proc/PID/map_files.
//  5. credentials and seccomp, last; then zombies die with their status.
//  6. go: unmap the scratch area (through a syscall instruction of the new
//     vdso), set every thread's registers, FPU state and signal mask, and
//     detach all threads of all processes together.
//
// Syscalls run in the process through package inject. Runs of calls that
// do not depend on each other's results (the mmaps, madvises and mprotects
// of the address space, signal handlers and itimers, a thread's own state)
// go as batches, one ptrace stop for each; a call whose arguments depend
// on an earlier result (an fd an open returned) is made first, on its own.
//
// Every signal is blocked in every thread until the very end, so nothing
// the program owns runs before its state is whole. A failure at any stage
// kills what was built, by pid; cryo never leaves a half-restored process.
package restore

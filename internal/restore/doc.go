// Package restore rebuilds a process from a dump's images.
//
// # Stages
//
// Run loads and checks the whole image first (imageset.Load, then
// preflight: pids free, CPU features, vdso, the kernel features the image
// needs): a bad image stops there, before anything exists. Then the stages
// of tree.go run over the whole tree, in order:
//
//   - files: deleted files back on disk, the fd kinds' side data read;
//   - root: the root born with its pid (birth: a stub that clone3s it with
//     set_tid and is killed, cryo being a child subreaper; other ways to
//     make the root, in new namespaces or beside an RPC caller, are other
//     birthFuncs). Its address space is then rebuilt: everything of the
//     stub unmapped but one scratch area, every VMA mapped at its address,
//     the pages filled, the vdso re-created with arch_prctl(ARCH_MAP_VDSO_64),
//     the mm fields and exe link set with prctl(PR_SET_MM_MAP);
//   - fork: every other process forked from its restored parent, parents
//     first, so that it inherits the parent's memory copy-on-write: it keeps
//     the VMAs it had inherited, with the pages still shared, and rebuilds
//     only the rest. Sessions are set as processes are born;
//   - groups: process groups, helpers standing in for leaders that exited;
//   - continued: processes whose parent had a continue to collect are
//     stopped and continued, before any signal of theirs is queued
//     (jobctl.go);
//   - task: fds (package files: objects processes share are made once and
//     taken over by the others with pidfd_getfd run by the receiving
//     process), root, cwd, umask, signals, timers, rlimits, threads;
//   - creds: credentials and seccomp, last, as each may take away what the
//     earlier stages needed (creds.go, docs/security.md);
//   - shared: what was held for sharing closed, memfds sealed;
//   - zombies: the image's zombies exit with their status, name, mask,
//     signal actions and credentials;
//   - stops: processes that were in a group stop are put in one again,
//     and their parents collect what they had collected (jobctl.go);
//   - locks: file locks taken again (package files), once no fd will be
//     closed any more, and read back;
//   - finish: the scratch area unmapped (through a syscall instruction of
//     the new vdso), then the last calls (dumpability, MDWE, seccomp strict
//     mode, a held SIGSTOP), every thread's registers, FPU state and signal
//     mask set, and scheduling, affinity and I/O priority given from
//     outside (attrs.go); then, the tree checked whole, every thread of
//     every process is let go together.
//
// Threads are made as soon as their process's address space is in, before
// it forks: a child of the image may be the child of a thread.
//
// Options.Notify is told the points CRIU's action scripts know:
// pre-restore before anything exists, post-restore and pre-resume once the
// tree is whole and still stopped, post-resume once it runs.
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

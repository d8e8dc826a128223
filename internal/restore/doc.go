// Package restore rebuilds a process from a dump's images.
//
// # Stages
//
//  1. load: read and check every image before anything is started (pids
//     free, CPU features, vdso, files present). A bad image stops here.
//  2. birth: start a stub (package stub), seize it, inject clone3 with
//     set_tid so the child gets the dumped pid, and kill the stub: cryo is a
//     child subreaper, so the child becomes cryo's own child.
//  3. memory: unmap all of the child but one scratch page, map every VMA of
//     the image at its address, fill the pages, re-create the vdso with
//     arch_prctl(ARCH_MAP_VDSO_64) and set the mm fields and exe link with
//     prctl(PR_SET_MM_MAP).
//  4. threads: clone3(CLONE_THREAD) with set_tid for every other thread.
//  5. the rest, by injection: files, cwd, signal handlers, timers, per-thread
//     state (sigaltstack, robust list, rseq, names), pending signals, and,
//     last, credentials and seccomp.
//  6. go: unmap the scratch page (through a syscall instruction of the new
//     vdso), set every thread's registers and FPU state, its signal mask,
//     and detach all threads.
//
// Every signal is blocked in every thread until the very end, so nothing
// the program owns runs before its state is whole. A failure at any stage
// kills what was built, by pid; cryo never leaves a half-restored process.
package restore

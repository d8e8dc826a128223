// Package nsenter runs Go code inside another process's namespace: on an
// OS thread of its own, locked to its goroutine and never unlocked, that
// setns(2)-es into the namespace and ends with the goroutine, so that no
// other Go code ever runs in it.
//
// Only kinds a thread can enter alone are taken (uts, ipc, net): the
// kernel refuses a multithreaded process's thread a mount or user
// namespace. What the thread reads of /proc/sys and /proc/sysvipc is the
// namespace's: the kernel picks the namespace of the opener.
//
// It touches nothing else: the caller says what to run.
package nsenter

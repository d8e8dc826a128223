package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Kill sends SIGKILL to process pid and reaps the exit of each task of
// tids: cryo's tracees (the threads of a process it built, a stub) or its
// children. Every process cryo starts or builds and has to end ends here.
//
// Threads other than pid are reaped first whatever the order of tids: the
// kernel reports a traced thread-group leader's exit only once the rest of
// its group is reaped (kernel/exit.c, delay_group_leader), and cryo, their
// tracer, is the one to reap them. SIGKILL cannot be caught or blocked, so
// each wait ends once the kernel has torn the task down; it is bounded by
// StopTimeout all the same.
func Kill(pid int, tids ...int) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	var errs []error
	for _, leader := range []bool{false, true} {
		for _, tid := range tids {
			if (tid == pid) == leader {
				if _, err := Reap(tid); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Reap waits until tid, a child or tracee of cryo's, reports its exit, and
// returns that status. A task that is no longer cryo's to wait for (already
// reaped, or detached) counts as gone: it returns a zero status and no
// error. Stops reported before the exit are passed over.
func Reap(tid int) (unix.WaitStatus, error) {
	for {
		ws, err := wait(tid)
		if errors.Is(err, ErrGone) {
			return 0, nil
		}
		if err != nil {
			return ws, fmt.Errorf("reap %d: %w", tid, err)
		}
		if ws.Exited() || ws.Signaled() {
			return ws, nil
		}
	}
}

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

// GetFd returns cryo's own copy (close-on-exec) of fd of process pid, the
// same open file description, taken with pidfd_open and pidfd_getfd. It
// needs what attaching with ptrace needs (PTRACE_MODE_ATTACH_REALCREDS,
// kernel/pid.c) and works on a stopped or a running process alike. The
// caller closes the copy.
func GetFd(pid, fd int) (int, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	cp, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return cp, nil
}

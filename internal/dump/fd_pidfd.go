package dump

import (
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"

	"github.com/cryo-project/cryo/internal/procfs"
)

// grabFd returns cryo's own copy (pidfd_getfd, close-on-exec) of the open
// file description the process holds at e.fd: anonymous-inode files cannot
// be reopened through /proc/PID/fd, and some state (a timerfd's overruns,
// an inotify queue's length) only shows through syscalls on the file.
func (e *fdEnv) grabFd() (int, error) {
	pfd, err := unix.PidfdOpen(e.p.pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", e.p.pid, err)
	}
	defer unix.Close(pfd)
	fd, err := unix.PidfdGetfd(pfd, e.fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return fd, nil
}

// dumpPidfd records which process a pidfd refers to. Restore reopens it
// with pidfd_open on the same pid, which names the same process only if
// that process is restored with the tree: a pidfd on a process outside the
// tree is refused (a live outside process could be reopened, but nothing
// would prove it is still the one the pidfd meant once the pid is reused),
// and so is one whose process is gone, reaped, as nothing could re-create
// a pidfd on a dead process without forking one to let die.
func dumpPidfd(e *fdEnv) (uint32, error) {
	pi := e.info.Pidfd
	if pi == nil {
		return 0, fmt.Errorf("fdinfo has no Pid line")
	}
	switch {
	case pi.Pid == -1:
		return 0, fmt.Errorf("a pidfd on a process that has exited and been reaped: %w", ErrNotSupported)
	case pi.Pid <= 0:
		return 0, fmt.Errorf("a pidfd on a process of another pid namespace: %w", ErrNotSupported)
	case len(pi.NSpid) > 1:
		return 0, fmt.Errorf("a pidfd on pid %d, in a nested pid namespace (NSpid %v): %w", pi.Pid, pi.NSpid, ErrNotSupported)
	}
	if err := e.p.inTree(pi.Pid); err != nil {
		return 0, err
	}
	return e.p.files.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIDFD.Enum(),
		Pidfd: &pidfd.PidfdEntry{
			Ino: proto.Uint32(uint32(e.st.Ino)), Flags: proto.Uint32(e.flags),
			Nspid: proto.Int32(int32(pi.Pid)), Fown: noOwner(),
		},
	}), nil
}

// inTree checks that pid is a process of the dumped tree: the root or one
// of its descendants (the tree is frozen: no process can leave or join
// it), alive or zombie. A thread other than a leader is refused: restore
// opens pidfds before it re-creates threads.
func (p *process) inTree(pid int) error {
	st, err := procfs.StatusPid(pid)
	if err != nil {
		return fmt.Errorf("a pidfd on pid %d: %w", pid, err)
	}
	if st.Tgid != pid {
		return fmt.Errorf("a pidfd on thread %d of process %d (PIDFD_THREAD): %w", pid, st.Tgid, ErrNotSupported)
	}
	for q, hops := pid, 0; ; hops++ {
		if q == p.opts.Pid {
			return nil
		}
		if q <= 1 || hops > 1<<16 {
			return fmt.Errorf("a pidfd on pid %d, which is not in the dumped tree of %d: %w", pid, p.opts.Pid, ErrNotSupported)
		}
		s, err := procfs.StatusPid(q)
		if err != nil {
			return fmt.Errorf("a pidfd on pid %d: ancestor %d: %w", pid, q, err)
		}
		q = s.PPid
	}
}

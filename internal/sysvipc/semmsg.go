package sysvipc

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// CheckSemMsg refuses a tree that uses System V semaphores or message
// queues, which cryo does not dump yet. Nothing ties such an object to a
// process the way a mapping ties a segment: what is seen is who used it
// last, the pid of the last semop on each semaphore (semctl GETPID, which
// SEM_UNDO adjustments also leave) and the last sender and receiver of
// each queue (/proc/sysvipc/msg). An object of the tree's that another
// process used since is not seen; a refused one names the object and the
// process.
func CheckSemMsg(inTree func(pid int) bool) error {
	sets, err := procfs.SysvSem()
	if err != nil {
		return fmt.Errorf("list System V semaphores: %w", err)
	}
	for _, s := range sets {
		for n := 0; n < int(s.Nsems); n++ {
			pid, err := kabi.SemGetPid(int(s.ID), n)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
				break // removed meanwhile
			}
			if err != nil {
				return fmt.Errorf("semctl(%d, %d, GETPID) of System V semaphore set (key %#x, id %d): %w", s.ID, n, uint32(s.Key), s.ID, err)
			}
			if pid > 0 && inTree(pid) {
				return fmt.Errorf("pid %d of the tree did the last semop on semaphore %d of System V semaphore set (key %#x, id %d): semaphores: %w", pid, n, uint32(s.Key), s.ID, errs.ErrNotSupported)
			}
		}
	}
	qs, err := procfs.SysvMsg()
	if err != nil {
		return fmt.Errorf("list System V message queues: %w", err)
	}
	for _, q := range qs {
		for _, pid := range []int32{q.LSpid, q.LRpid} {
			if pid > 0 && inTree(int(pid)) {
				return fmt.Errorf("pid %d of the tree last used System V message queue (key %#x, id %d, %d messages): message queues: %w", pid, uint32(q.Key), q.ID, q.Qnum, errs.ErrNotSupported)
			}
		}
	}
	return nil
}

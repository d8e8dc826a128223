package sysvipc

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/nsenter"
)

// Task is a thread of the tree as the semaphore and queue checks see it:
// its pid and tid, the syscall it stood in when frozen (orig_rax, -1 for
// none) and that call's first argument, the set or queue id of a semop or
// msgrcv.
type Task struct {
	Pid, Tid int
	Syscall  int64
	Arg0     uint64
}

// owners is what decides which semaphore sets and queues are the tree's.
type owners struct {
	all     bool                    // every object is the tree's (its own namespace)
	pids    map[int]bool            // the tree's processes and zombies
	blocked map[int64][]blockedTask // by syscall
}

type blockedTask struct {
	tid int
	id  int32
}

func newOwners(tasks []Task, zombies []int) *owners {
	o := &owners{pids: map[int]bool{}, blocked: map[int64][]blockedTask{}}
	for _, t := range tasks {
		o.pids[t.Pid] = true
		switch t.Syscall {
		case unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP, unix.SYS_MSGSND, unix.SYS_MSGRCV:
			o.blocked[t.Syscall] = append(o.blocked[t.Syscall], blockedTask{t.Tid, int32(t.Arg0)})
		}
	}
	for _, z := range zombies {
		o.pids[z] = true
	}
	return o
}

func (o *owners) inTree(pid int32) bool { return pid > 0 && o.pids[int(pid)] }

// waiter is a thread of the tree that stood in one of the syscalls nrs on
// object id when frozen, 0 if none.
func (o *owners) waiter(id int32, nrs ...int64) int {
	for _, nr := range nrs {
		for _, b := range o.blocked[nr] {
			if b.id == id {
				return b.tid
			}
		}
	}
	return 0
}

// outsider says whether pid, recorded by the kernel as the last to use an
// object of the tree's, is a live process outside the tree: another user
// of the object. A pid no process has any more is a user that is gone.
func (o *owners) outsider(pid int32) bool {
	if pid <= 0 || o.pids[int(pid)] {
		return false
	}
	err := unix.Kill(int(pid), 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// CheckSemMsg finds the semaphore sets and message queues that are the
// tree's (see the package doc), reads them, and refuses what cannot be
// restored exactly. tasks are every thread of the tree, zombies the pids
// of its zombies.
func (d *Dumper) CheckSemMsg(tasks []Task, zombies []int) error {
	return d.in(func() error { return d.checkSemMsg(tasks, zombies) })
}

func (d *Dumper) checkSemMsg(tasks []Task, zombies []int) error {
	o := newOwners(tasks, zombies)
	o.all = d.nsPid != 0
	if err := d.checkSems(o); err != nil {
		return err
	}
	if len(d.sems) > 0 {
		if err := checkUndo(tasks, d.sems[0]); err != nil {
			return err
		}
	}
	return d.checkMsgs(o)
}

// checkUndo refuses a thread of the tree that has a semaphore undo list,
// once the tree is known to use semaphores. The kernel shows no list's
// adjustments (nothing in /proc, no semctl), but kcmp(KCMP_SYSVSEM) tells
// whether a task has a list: cryo compares each thread with one of its
// own threads that has dropped its list (unshare(CLONE_SYSVSEM)), whose
// list is therefore none. A list is made by a SEM_UNDO semop, and by every
// clone with CLONE_SYSVSEM (pthread_create, Go's threads), so an empty
// one cannot be told from one holding adjustments: both are refused.
func checkUndo(tasks []Task, uses *semSet) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, without
		// the undo list the others still share.
		runtime.LockOSThread()
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_SYSVSEM); err != nil {
				return fmt.Errorf("unshare(CLONE_SYSVSEM): %w", err)
			}
			self := unix.Gettid()
			for _, t := range tasks {
				r, err := kabi.Kcmp(self, t.Tid, kabi.KCMP_SYSVSEM, 0, 0)
				if errors.Is(err, unix.ESRCH) {
					continue
				}
				if err != nil {
					return fmt.Errorf("kcmp(KCMP_SYSVSEM) of thread %d of pid %d: %w", t.Tid, t.Pid, err)
				}
				if r != 0 {
					return fmt.Errorf("thread %d of pid %d has a System V semaphore undo list (a SEM_UNDO semop, or a thread made with CLONE_SYSVSEM, as by pthread_create), whose adjustments the kernel does not show, and the tree uses %s: semaphore undo: %w",
						t.Tid, t.Pid, uses.name(), errs.ErrNotSupported)
				}
			}
			return nil
		}()
	}()
	return <-done
}

// asCreator runs fn on a thread of its own that has taken uid and gid,
// so that what fn creates has them as its creator's (cuid, cgid, which the
// kernel sets from the caller's and nothing changes later). The thread is
// then let die, never to run Go code again.
func asCreator(ns *os.File, uid, gid uint32, fn func() error) error {
	return onThread(ns, func() error {
		if uid != uint32(os.Geteuid()) || gid != uint32(os.Getegid()) {
			if err := kabi.SetThreadCreds(uid, gid); err != nil {
				return fmt.Errorf("take creator uid %d gid %d: %w", uid, gid, err)
			}
		}
		return fn()
	})
}

// onThread runs fn on a thread of its own, in IPC namespace ns (nil:
// cryo's), which ends with it.
func onThread(ns *os.File, fn func() error) error {
	if ns != nil {
		return nsenter.RunFile(ns, "ipc", fn)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		done <- fn()
	}()
	return <-done
}

// in runs fn in IPC namespace ns: on a thread of its own there, or, for
// cryo's (nil), right here.
func in(ns *os.File, fn func() error) error {
	if ns == nil {
		return fn()
	}
	return nsenter.RunFile(ns, "ipc", fn)
}

// nextID writes kernel.NAME_next_id, so that the next object of its kind
// made in the namespace gets id (it needs CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN over the IPC namespace).
func nextID(kind string, id uint32) error {
	if err := os.WriteFile("/proc/sys/kernel/"+kind+"_next_id", []byte(strconv.FormatUint(uint64(id), 10)), 0); err != nil {
		return fmt.Errorf("choose the id (kernel.%s_next_id needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN): %w", kind, err)
	}
	return nil
}

// As runs syscall nr as process pid of the restored tree (an injected
// call), after copying data, if not nil, into its memory and putting its
// address in args[at]. It returns false, doing nothing, when pid is no
// process of the tree that can run one (not in the image, or a zombie).
type As func(pid int, name string, nr uintptr, data []byte, at int, args ...uint64) (bool, error)

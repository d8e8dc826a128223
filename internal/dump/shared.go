package dump

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Processes that share what only threads of one process share. Restore
// gives every process of the tree its own address space, fd table, fs
// struct (root, cwd, umask) and signal handlers, so two processes that
// shared one — a vfork child and its parent, clone with CLONE_VM,
// CLONE_FILES, CLONE_FS or CLONE_SIGHAND but no CLONE_THREAD — would come
// back apart: the dump refuses them, naming both and what they share.
// kcmp(2) compares the kernel objects without stopping anything.

var sharedObjects = []struct {
	typ       int
	what, how string
}{
	{kabi.KCMP_VM, "address space", "vfork, or clone with CLONE_VM"},
	{kabi.KCMP_FILES, "fd table", "clone with CLONE_FILES"},
	{kabi.KCMP_FS, "root, cwd and umask", "clone with CLONE_FS"},
	{kabi.KCMP_SIGHAND, "signal handlers", "clone with CLONE_SIGHAND"},
}

func sharing(a, b int, what, how string) error {
	return fmt.Errorf("processes %d and %d share one %s (%s, without CLONE_THREAD), which restore would give each its own: %w",
		a, b, what, how, ErrNotSupported)
}

// checkChildrenShare refuses, before pid is seized, a process that shares
// an object with one of its children. It matters most for vfork: the
// parent waits in the kernel until the child execs or exits and cannot be
// stopped, so seizing it would only time out. A vfork lasts as long as the
// child takes to exec (a shell running `sleep` in a loop is in one a few
// times a second), so a shared address space is looked at again for a
// while before it is refused.
func checkChildrenShare(pid int) error {
	deadline := time.Now().Add(vforkWait)
	for {
		err := childrenShare(pid)
		var se *shareError
		if !errors.As(err, &se) || se.typ != kabi.KCMP_VM || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// vforkWait is how long a vfork may last before the dump refuses it.
const vforkWait = 500 * time.Millisecond

// shareError is a refusal of two processes that share an object.
type shareError struct {
	typ int
	err error
}

func (e *shareError) Error() string { return e.err.Error() }
func (e *shareError) Unwrap() error { return e.err }

func childrenShare(pid int) error {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil // gone: the seize will say so
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		children, err := procfs.TaskChildrenPid(pid, tid)
		if err != nil {
			continue // the thread exited, or the process: the seize will say so
		}
		for _, child := range children {
			for _, o := range sharedObjects {
				if r, err := kabi.Kcmp(pid, child, o.typ, 0, 0); err == nil && r == 0 {
					return &shareError{typ: o.typ, err: sharing(pid, child, o.what, o.how)}
				}
			}
		}
	}
	return nil
}

// checkShared refuses, once the whole tree is frozen, any two of its
// processes that share an object. kcmp orders the objects it compares, so
// sorting by it finds the pairs in n log n comparisons, not n².
func (t *tree) checkShared() error {
	for _, o := range sharedObjects {
		ps := append([]*process(nil), t.procs...)
		var kerr error
		cmp := func(a, b *process) int {
			r, err := kabi.Kcmp(a.pid, b.pid, o.typ, 0, 0)
			if err != nil && kerr == nil {
				kerr = fmt.Errorf("kcmp %d and %d: %w", a.pid, b.pid, err)
			}
			return r
		}
		sort.Slice(ps, func(i, j int) bool { return cmp(ps[i], ps[j]) == 1 })
		if kerr != nil {
			return kerr
		}
		for i := 1; i < len(ps); i++ {
			if cmp(ps[i-1], ps[i]) == 0 {
				return sharing(ps[i-1].pid, ps[i].pid, o.what, o.how)
			}
		}
	}
	return nil
}

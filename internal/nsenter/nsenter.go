package nsenter

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Kinds nsenter can enter, by their name in /proc/PID/ns.
var kinds = map[string]int{"uts": unix.CLONE_NEWUTS, "ipc": unix.CLONE_NEWIPC, "net": unix.CLONE_NEWNET}

// Run runs fn on a thread of its own inside the kind namespace of process
// pid (/proc/PID/ns/KIND) and returns its error. fn must not start
// goroutines that expect to be in the namespace: they run elsewhere.
func Run(pid int, kind string, fn func() error) error {
	nstype, ok := kinds[kind]
	if !ok {
		return fmt.Errorf("nsenter: cannot enter a %s namespace from one thread", kind)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return err
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in another namespace, ends with
		// the goroutine.
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), nstype); err != nil {
			done <- fmt.Errorf("setns into the %s namespace of process %d: %w", kind, pid, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// RunFile is Run for the namespace open as f (an open /proc/PID/ns/KIND
// keeps the namespace alive, whatever becomes of its processes).
func RunFile(f *os.File, kind string, fn func() error) error {
	nstype, ok := kinds[kind]
	if !ok {
		return fmt.Errorf("nsenter: cannot enter a %s namespace from one thread", kind)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, as in Run
		if err := unix.Setns(int(f.Fd()), nstype); err != nil {
			done <- fmt.Errorf("setns into the %s namespace %s: %w", kind, f.Name(), err)
			return
		}
		done <- fn()
	}()
	return <-done
}

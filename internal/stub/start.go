package stub

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// Proc is a started stub, not yet traced: the caller seizes it.
type Proc struct {
	Pid int
	// Handed are the capabilities the stub holds only because cryo handed
	// them on as ambient ones (see HandOn): whatever the stub builds must
	// not keep them.
	Handed uint64
}

// HandOn is what a stub started by this process gets as ambient
// capabilities. Three steps of a restore are judged by the capabilities of
// the stub (or the process it forks), not cryo's: clone3 with set_tid,
// PR_SET_MM_MAP with an exe_fd, and opening /proc/self/map_files. A file
// capability of cryo's is not inherited across the exec of the stub, so a
// non-root cryo hands on CAP_CHECKPOINT_RESTORE (or, lacking it,
// CAP_SYS_ADMIN) from its permitted set. Root hands on nothing: the exec
// gives root's stub every capability of its bounding set anyway. The
// result is 0 when there is nothing to hand on; the caller decides whether
// that is an error.
func HandOn() (uint64, error) {
	if os.Geteuid() == 0 {
		return 0, nil
	}
	own, err := procfs.OwnCaps()
	if err != nil {
		return 0, fmt.Errorf("read cryo's capabilities: %w", err)
	}
	for _, c := range []uint{unix.CAP_CHECKPOINT_RESTORE, unix.CAP_SYS_ADMIN} {
		if own.Prm&(1<<c) != 0 {
			return 1 << c, nil
		}
	}
	return 0, nil
}

// Start builds the stub for base, runs it from a memfd named name with an
// empty environment, fds 0-2 on /dev/null and SIGKILL as its parent-death
// signal, holding the capabilities of
// HandOn as ambient ones (raised in the forked child only, before the
// exec: cryo's own threads are untouched). Both restore and `cryo check`
// start their stubs here, so that the probes run with exactly the
// privilege the restore will have. Files, if any, are the stub's fds 3,
// 4, ... (the files a restore inherits, see files.Restorer.Inherit).
func Start(base uint64, name string, files ...*os.File) (*Proc, error) {
	handed, err := HandOn()
	if err != nil {
		return nil, err
	}
	elf, err := Build(base)
	if err != nil {
		return nil, err
	}
	mfd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for the stub: %w", err)
	}
	defer unix.Close(mfd)
	if _, err := unix.Write(mfd, elf); err != nil {
		return nil, fmt.Errorf("write stub: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	var ambient []uintptr
	for c := uintptr(0); c < 64; c++ {
		if handed&(1<<c) != 0 {
			ambient = append(ambient, c)
		}
	}
	proc, err := os.StartProcess("/proc/self/fd/"+strconv.Itoa(mfd), []string{name}, &os.ProcAttr{
		Env:   []string{},
		Files: append([]*os.File{devnull, devnull, devnull}, files...),
		// Until cryo traces it (with PTRACE_O_EXITKILL), the stub dies
		// with the thread that started it, so a cryo killed in between
		// leaves nothing. What it forks starts without (fork clears
		// the parent-death signal) and is traced from its birth.
		Sys: &syscall.SysProcAttr{AmbientCaps: ambient, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return nil, fmt.Errorf("start stub (ambient capabilities %#x): %w", handed, err)
	}
	p := &Proc{Pid: proc.Pid, Handed: handed}
	// Reaped by Kill (package ptrace's wait), never with Process.Wait,
	// which would steal the ptrace stops that package ptrace waits for.
	proc.Release()
	return p, nil
}

// Kill kills the stub and reaps it (ptrace.Kill: bounded, and whether or
// not cryo traces it).
func (p *Proc) Kill() { ptrace.Kill(p.Pid, p.Pid) }

package feature

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/cryo-project/cryo/internal/procfs"
	"golang.org/x/sys/unix"
)

func probePtraceScope() (string, error) {
	v, err := sysctlInt("kernel.yama.ptrace_scope")
	if errors.Is(err, os.ErrNotExist) {
		return "Yama not built in: classic rules (same uid, or CAP_SYS_PTRACE)", nil
	}
	if err != nil {
		return "", err
	}
	c, err := ownCaps()
	if err != nil {
		return "", err
	}
	sysPtrace := c.Has(capSysPtrace)
	switch v {
	case 0:
		return "0: classic rules (same uid, or CAP_SYS_PTRACE)", nil
	case 1:
		if sysPtrace {
			return "1: restricted to descendants, lifted by CAP_SYS_PTRACE (held)", nil
		}
		return "1: only descendants of cryo can be dumped (no CAP_SYS_PTRACE)", nil
	case 2:
		if sysPtrace {
			return "2: admin-only, CAP_SYS_PTRACE held", nil
		}
		return "", fmt.Errorf("%w: kernel.yama.ptrace_scope = 2 requires CAP_SYS_PTRACE", ErrNotPermitted)
	case 3:
		return "", fmt.Errorf("%w: kernel.yama.ptrace_scope = 3 forbids ptrace until reboot", ErrNotPermitted)
	}
	return "", fmt.Errorf("kernel.yama.ptrace_scope = %d: unknown value", v)
}

// probeNsLastPid writes back the value it reads, under the flock that
// CRIU and cryo take on the file, so the next pid does not change.
func probeNsLastPid() (string, error) {
	const path = "/proc/sys/kernel/ns_last_pid"
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", classify("open "+path, err, "", unix.ENOENT)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("flock %s: %w", path, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	b := make([]byte, 32)
	n, err := f.ReadAt(b, 0)
	if n == 0 {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	last, err := procfs.ParseSysctlInt(b[:n])
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.FormatInt(last, 10)), 0); err != nil {
		return "", classify("write", err, "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the pid namespace")
	}
	return fmt.Sprintf("last pid %d", last), nil
}

func probePidMax() (string, error) {
	v, err := sysctlInt("kernel.pid_max")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d: images with higher pids cannot be restored here", v), nil
}

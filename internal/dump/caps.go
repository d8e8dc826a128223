package dump

// Dumping without root (docs/nonroot.md): a user may dump a process of
// their own when cryo holds CAP_CHECKPOINT_RESTORE (a file capability),
// which the kernel requires to follow /proc/PID/map_files, and ptrace lets
// cryo attach: the same uid, a target that is dumpable and holds no
// capability cryo lacks, and kernel.yama.ptrace_scope 0 (or CAP_SYS_PTRACE,
// since the target is no descendant of cryo).

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// checkPrivileges refuses, before the process is touched, a dump that
// would fail half-way for want of CAP_CHECKPOINT_RESTORE: every process
// has at least its executable mapped, and map_files is how it is read.
func checkPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	own, err := procfs.OwnCaps()
	if err != nil {
		return fmt.Errorf("read cryo's capabilities: %w", err)
	}
	if own.Has(unix.CAP_CHECKPOINT_RESTORE) || own.Has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	return fmt.Errorf("dump as a non-root user (uid %d) needs CAP_CHECKPOINT_RESTORE (to read /proc/PID/map_files): "+
		"give it to cryo with `setcap cap_checkpoint_restore+ep %s` (see docs/nonroot.md): %w", os.Getuid(), selfPath(), unix.EPERM)
}

func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "cryo"
}

// ptraceDenied explains an EPERM from seizing the target: what of ptrace's
// rules (kernel.yama.ptrace_scope, ownership, dumpability, capabilities)
// stands in the way, as far as cryo can tell from outside.
func ptraceDenied(pid int, err error) error {
	if !errors.Is(err, unix.EPERM) {
		return err
	}
	sysPtrace := os.Geteuid() == 0
	if own, err := procfs.OwnCaps(); err == nil && own.Has(unix.CAP_SYS_PTRACE) {
		sysPtrace = true
	}
	switch scope := kabi.PtraceScope(); {
	case scope == 3:
		return fmt.Errorf("%w: cryo may not trace pid %d: kernel.yama.ptrace_scope is 3, which disables ptrace until reboot", err, pid)
	case scope == 2 && !sysPtrace:
		return fmt.Errorf("%w: cryo may not trace pid %d: kernel.yama.ptrace_scope is 2, which needs CAP_SYS_PTRACE "+
			"(setcap cap_checkpoint_restore,cap_sys_ptrace+ep %s; see docs/nonroot.md)", err, pid, selfPath())
	case scope == 1 && !sysPtrace:
		return fmt.Errorf("%w: cryo may not trace pid %d: kernel.yama.ptrace_scope is 1, which lets a tracer without CAP_SYS_PTRACE attach only to its own descendants: "+
			"run `sysctl kernel.yama.ptrace_scope=0` or `setcap cap_checkpoint_restore,cap_sys_ptrace+ep %s` (see docs/nonroot.md)", err, pid, selfPath())
	}
	if !sysPtrace {
		if st, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); serr == nil {
			if sys, ok := st.Sys().(*unix.Stat_t); ok && int(sys.Uid) != os.Getuid() {
				// /proc/PID is owned by root for a process that is not dumpable.
				return fmt.Errorf("%w: cryo may not trace pid %d: it belongs to another user, or is not dumpable (setuid, file capabilities, PR_SET_DUMPABLE 0): that needs CAP_SYS_PTRACE", err, pid)
			}
		}
		if tc, cerr := procfs.TaskCaps(pid); cerr == nil {
			if own, oerr := procfs.OwnCaps(); oerr == nil && tc.Prm&^own.Prm != 0 {
				return fmt.Errorf("%w: cryo may not trace pid %d: it holds %s, which cryo does not: that needs CAP_SYS_PTRACE", err, pid, kabi.CapNames(tc.Prm&^own.Prm))
			}
		}
	}
	return fmt.Errorf("%w: cryo may not trace pid %d (another user's process, a setuid program, or kernel.yama.ptrace_scope forbids it; see `cryo check`)", err, pid)
}

// seccompHint explains EACCES from PTRACE_SECCOMP_GET_FILTER: the kernel
// hands seccomp filters out only to a tracer with CAP_SYS_ADMIN (in the
// initial user namespace) that runs without seccomp itself.
func seccompHint(err error) error {
	if !errors.Is(err, unix.EACCES) {
		return err
	}
	return fmt.Errorf("%w: reading a process's seccomp filters (PTRACE_SECCOMP_GET_FILTER) needs CAP_SYS_ADMIN, "+
		"and cryo itself must run without seccomp; CAP_CHECKPOINT_RESTORE is not enough (see docs/nonroot.md)", err)
}

package restore

// Restoring without root (docs/nonroot.md).
//
// Three steps of a restore are judged by the capabilities of the task that
// makes the call, which is the stub or the process being built, not cryo:
// clone3 with set_tid (the stub forks the process, the process forks its
// threads), prctl(PR_SET_MM_MAP) with an exe_fd, and the process opening
// its own /proc/self/map_files (shared anonymous memory). Each needs
// CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN). A file capability of cryo's
// is not inherited across the exec of the stub, so cryo hands it on as an
// ambient capability (raised in the forked child only, before the exec;
// cryo's own threads are untouched): the stub and the process it forks
// hold it while the process is built, and restoreCreds (creds.go) then
// gives every thread the credentials of the image, checked against what
// cryo may give, which takes it away again before anything of the program
// runs.
//
// Writing /proc/sys/kernel/ns_last_pid from cryo instead (which its own
// CAP_CHECKPOINT_RESTORE allows) would place the pids only, racing every
// other fork on the machine, and leave the exe link and shared memory
// without the capability they need: the ambient capability covers all three.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// errNoCapability is the refusal of a non-root cryo that has nothing to
// hand on to the stub (stub.HandOn): the restore could only fail at clone3.
func errNoCapability() error {
	return fmt.Errorf("restore as a non-root user (uid %d) needs CAP_CHECKPOINT_RESTORE (clone3 with set_tid, the exe link, /proc/PID/map_files): "+
		"give it to cryo with `setcap cap_checkpoint_restore+ep %s` (see docs/nonroot.md): %w", os.Getuid(), selfPath(), unix.EPERM)
}

func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "cryo"
}

// hintPrivilege names what the kernel wanted when a step failed with EPERM
// or EACCES; other errors come back as they are.
func hintPrivilege(err error, what string) error {
	if err == nil || os.Geteuid() == 0 || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
		return err
	}
	return fmt.Errorf("%w (%s; see docs/nonroot.md)", err, what)
}

// seizeHint explains an EPERM from seizing the stub, cryo's own child.
func seizeHint(err error) error {
	if !errors.Is(err, unix.EPERM) {
		return err
	}
	switch kabi.PtraceScope() {
	case 2:
		return fmt.Errorf("%w: kernel.yama.ptrace_scope is 2: only a tracer with CAP_SYS_PTRACE may attach (setcap cap_checkpoint_restore,cap_sys_ptrace+ep cryo, or sysctl kernel.yama.ptrace_scope=1)", err)
	case 3:
		return fmt.Errorf("%w: kernel.yama.ptrace_scope is 3: ptrace is disabled on this machine until reboot, and cryo cannot work without it", err)
	}
	return err
}

// setOomScoreAdj writes the image's oom_score_adj unless the process
// already has it (it inherits cryo's): lowering it needs CAP_SYS_RESOURCE.
func setOomScoreAdj(pid int, v int) error {
	path := "/proc/" + strconv.Itoa(pid) + "/oom_score_adj"
	if b, err := os.ReadFile(path); err == nil {
		if cur, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cur == v {
			return nil
		}
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(v)), 0); err != nil {
		return fmt.Errorf("oom_score_adj %d: %w", v, hintPrivilege(err, "lowering oom_score_adj below cryo's own needs CAP_SYS_RESOURCE"))
	}
	return nil
}

// dropAll empties every capability set of the leader when cryo handed it
// some: for a process that only exists to die (a zombie of the image),
// which never reaches restoreCreds.
func (c *child) dropAll() error {
	if c.handedOn == 0 {
		return nil
	}
	args := kabi.NewCapsetArgs(kabi.Caps{})
	p, err := c.arg(kabi.Bytes(&args))
	if err != nil {
		return err
	}
	_, err = c.call(c.leader, "capset", unix.SYS_CAPSET, p, p+uint64(kabi.CapsetDataOffset))
	return err
}

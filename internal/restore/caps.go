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
// hold it while the process is built, and restoreCaps then gives every
// thread the capability sets of the image, which takes it away again
// before anything of the program runs.
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
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// stubAmbient returns the capabilities the stub is started with as ambient
// ones: none for root (the exec gives root's stub every capability), else
// CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) from cryo's permitted set. With
// neither, the restore could only fail at clone3: say so before starting.
func stubAmbient() ([]uintptr, error) {
	if os.Geteuid() == 0 {
		return nil, nil
	}
	own, err := procfs.OwnCaps()
	if err != nil {
		return nil, fmt.Errorf("read cryo's capabilities: %w", err)
	}
	for _, c := range []uintptr{unix.CAP_CHECKPOINT_RESTORE, unix.CAP_SYS_ADMIN} {
		if own.Prm&(1<<c) != 0 {
			return []uintptr{c}, nil
		}
	}
	return nil, fmt.Errorf("restore as a non-root user (uid %d) needs CAP_CHECKPOINT_RESTORE (clone3 with set_tid, the exe link, /proc/PID/map_files): "+
		"give it to cryo with `setcap cap_checkpoint_restore+ep %s` (see docs/nonroot.md)", os.Getuid(), selfPath())
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

func capMask(words []uint32) uint64 {
	var m uint64
	for i, w := range words[:min(len(words), 2)] {
		m |= uint64(w) << (32 * i)
	}
	return m
}

func imageCaps(cr *creds.CredsEntry) kabi.Caps {
	return kabi.Caps{
		Eff: capMask(cr.GetCapEff()), Prm: capMask(cr.GetCapPrm()), Inh: capMask(cr.GetCapInh()),
		Amb: capMask(cr.GetCapAmb()), Bnd: capMask(cr.GetCapBnd()),
	}
}

// threadCreds is the creds entry of thread i, the leader's if it has none.
func (r *restorer) threadCreds(i int) *creds.CredsEntry {
	if cr := r.l.cores[i].GetThreadCore().GetCreds(); cr != nil {
		return cr
	}
	return r.l.cores[0].GetThreadCore().GetCreds()
}

// restoreCaps gives thread t the capability sets of cr: the bounding set
// where it can (dropping needs CAP_SETPCAP), then effective, permitted and
// inheritable with capset, then the ambient set. It runs after the ids are
// set (a change of uid clears capabilities) and takes away the ambient
// CAP_CHECKPOINT_RESTORE of a non-root restore.
func (r *restorer) restoreCaps(t *ptrace.Task, cr *creds.CredsEntry) error {
	if cr == nil || len(cr.GetCapPrm()) == 0 {
		return nil // an image without capability sets: leave them be
	}
	c := r.c
	want := imageCaps(cr)
	have, err := procfs.TaskCaps(t.Tid)
	if err != nil {
		return fmt.Errorf("thread %d: %w", t.Tid, err)
	}
	// What cryo handed on is for building the process only: an image (which
	// its user may have written) cannot ask to keep it.
	extra := (want.Prm|want.Eff|want.Amb)&^(have.Prm&^c.handedOn) | want.Inh&^((have.Prm|have.Inh)&^c.handedOn)
	if extra != 0 {
		return fmt.Errorf("thread %d held %s, which a restore by uid %d cannot give it: restore it as root", t.Tid, kabi.CapNames(extra), os.Getuid())
	}
	if len(cr.GetCapBnd()) > 0 && have.Bnd&^want.Bnd != 0 {
		if have.Has(unix.CAP_SETPCAP) {
			for n := uint64(0); n < 64; n++ {
				if have.Bnd&^want.Bnd&(1<<n) == 0 {
					continue
				}
				if _, err := c.call(t, "prctl(PR_CAPBSET_DROP)", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, n); err != nil {
					return err
				}
			}
		} else {
			r.log.Warn("bounding set not restored: dropping capabilities from it needs CAP_SETPCAP",
				"tid", t.Tid, "extra", kabi.CapNames(have.Bnd&^want.Bnd))
		}
	}
	if want.Eff != have.Eff || want.Prm != have.Prm || want.Inh != have.Inh {
		args := kabi.NewCapsetArgs(want)
		p, err := c.arg(kabi.Bytes(&args))
		if err != nil {
			return err
		}
		if _, err := c.call(t, "capset", unix.SYS_CAPSET, p, p+uint64(unsafe.Offsetof(args.Data))); err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
	}
	if want.Amb != have.Amb {
		// capset has already dropped ambient bits that left the permitted
		// or inheritable set; clear the rest and raise the image's.
		if _, err := c.call(t, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL); err != nil {
			return err
		}
		for n := uint64(0); n < 64; n++ {
			if want.Amb&(1<<n) == 0 {
				continue
			}
			if _, err := c.call(t, "prctl(PR_CAP_AMBIENT_RAISE)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, n); err != nil {
				return fmt.Errorf("thread %d: ambient %s: %w", t.Tid, kabi.CapNames(1<<n), err)
			}
		}
	}
	return nil
}

// dropAll empties every capability set of the leader when cryo handed it
// some: for a process that only exists to die (a zombie of the image),
// which never reaches restoreCaps.
func (c *child) dropAll() error {
	if c.handedOn == 0 {
		return nil
	}
	args := kabi.NewCapsetArgs(kabi.Caps{})
	p, err := c.arg(kabi.Bytes(&args))
	if err != nil {
		return err
	}
	_, err = c.call(c.leader, "capset", unix.SYS_CAPSET, p, p+uint64(unsafe.Offsetof(args.Data)))
	return err
}

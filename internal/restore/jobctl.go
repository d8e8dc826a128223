package restore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
)

// Job control: processes that were in a group stop come back in one, and
// the wait reports their parents had not collected come back uncollected
// (dump's jobctl.go says what the kernel keeps).
//
// A restored process is put in a group stop while cryo still traces it,
// the way the kernel makes one: the stop signal is queued to its leader,
// unblocked for it alone, and let through when the kernel reports it, so
// that do_signal_stop starts a group stop with that signal (it sets
// group_exit_code, the parent's report); every other thread then takes
// part as it next passes through get_signal, and the last one to do so
// makes the stop complete (SIGNAL_STOP_STOPPED) and tells the parent,
// with a SIGCHLD and a wake-up, as the original stop had. Being traced,
// the threads do not sleep in it: each reports a PTRACE_EVENT_STOP and
// the injections go on. When cryo lets them go, the kernel sees the group
// stop and stops them again (__ptrace_unlink), without a new report.
//
// A report the parent had collected is collected again by the restored
// parent (waitid, injected), and the SIGCHLD the restored stop queued for
// it is taken back unless the image had one pending.
//
// A continue the parent had not collected (SIGNAL_STOP_CONTINUED) is made
// as the kernel makes it: the process is stopped and continued (SIGCONT)
// before anything of its own is restored, since SIGCONT and the stop
// signal each flush the other from every pending queue.

// stopSignal is the signal of the group stop process r was in; 0 if it
// was running. load checks that it is one of the stop signals.
func (r *restorer) stopSignal() unix.Signal {
	tc := r.l.cores[0].GetTc()
	if tc.GetTaskState() != imageset.TaskStopped {
		return 0
	}
	return unix.Signal(tc.GetStopSigno())
}

// metaTask is what cryo-meta.json holds of thread tid (never nil).
func (r *restorer) metaTask(tid uint32) *meta.Task {
	if t := r.l.meta.Tasks[int(tid)]; t != nil {
		return t
	}
	return &meta.Task{}
}

// checkJobctl refuses an image whose task state restore cannot give.
func checkJobctl(p *loaded) error {
	tc := p.cores[0].GetTc()
	switch tc.GetTaskState() {
	case imageset.TaskAlive:
	case imageset.TaskStopped:
		switch unix.Signal(tc.GetStopSigno()) {
		case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		default:
			return fmt.Errorf("process %d: stopped by signal %d, not a stop signal", p.tree.GetPid(), tc.GetStopSigno())
		}
	default:
		return fmt.Errorf("process %d: task state %d: %w", p.tree.GetPid(), tc.GetTaskState(), ErrNotSupported)
	}
	return nil
}

// groupStop puts process r in a group stop by sig (see the top of this
// file). Every thread is stopped at an injection's end, all signals
// blocked.
func (r *restorer) groupStop(sig unix.Signal) error {
	c := r.c
	for _, t := range c.threads {
		t.Deliver, t.GroupStopped = sig, false
	}
	defer func() {
		for _, t := range c.threads {
			t.Deliver = 0
		}
	}()
	// SIGTSTP, SIGTTIN and SIGTTOU can be blocked, and every signal is
	// until finish: unblock the stop signal, and nothing else, for the
	// leader, which then sends it to itself.
	if err := kabi.SetSigmask(c.leader.Tid, ^uint64(0)&^(1<<(sig-1))); err != nil {
		return fmt.Errorf("unblock %s: %w", unix.SignalName(sig), err)
	}
	if _, err := c.call(c.leader, "tgkill "+unix.SignalName(sig), unix.SYS_TGKILL, uint64(c.pid), uint64(c.leader.Tid), uint64(sig)); err != nil {
		return err
	}
	// Injecting with syscall stops (no int3: see keepTrapIgnored), the
	// task is still in the kernel after the call; the signal is taken on
	// its way out, in the next call.
	if !c.leader.GroupStopped {
		if _, err := c.call(c.leader, "getpid", unix.SYS_GETPID); err != nil {
			return err
		}
	}
	if err := kabi.SetSigmask(c.leader.Tid, ^uint64(0)); err != nil {
		return fmt.Errorf("block signals of %d: %w", c.leader.Tid, err)
	}
	if !c.leader.GroupStopped {
		if sig != unix.SIGSTOP {
			// The kernel discards SIGTSTP, SIGTTIN and SIGTTOU sent to a
			// process in an orphaned process group (get_signal).
			return fmt.Errorf("the kernel did not stop it with %s: its process group %d is orphaned here (no process of its session outside the group is a parent of one inside), unlike when it was stopped: %w",
				unix.SignalName(sig), r.l.tree.GetPgid(), ErrNotSupported)
		}
		return fmt.Errorf("the kernel did not stop it with %s", unix.SignalName(sig))
	}
	for _, t := range c.threads[1:] {
		if _, err := c.call(t, "getpid (join the group stop)", unix.SYS_GETPID); err != nil {
			return err
		}
		if !t.GroupStopped {
			if _, err := c.call(t, "getpid (join the group stop)", unix.SYS_GETPID); err != nil {
				return err
			}
		}
		if !t.GroupStopped {
			return fmt.Errorf("thread %d did not take part in the group stop", t.Tid)
		}
	}
	r.log.Debug("group stop", "pid", c.pid, "signal", unix.SignalName(sig))
	return nil
}

// stopAll is the stops stage: every process that was stopped is stopped
// again, then each parent collects what its parent had collected, and the
// SIGCHLDs the stops sent are taken back.
func (t *treeRestorer) stopAll() error {
	parents := map[*restorer]bool{}
	for _, r := range t.rs {
		if r.l.zombie {
			continue
		}
		sig := r.stopSignal()
		if sig == 0 {
			continue
		}
		if err := r.groupStop(sig); err != nil {
			return fmt.Errorf("process %d, stopped by %s: %w", r.c.pid, unix.SignalName(sig), err)
		}
		parent := t.byPid[r.l.tree.GetPpid()]
		if parent == nil || r == t.rs[0] {
			continue // the root: its parent is restore's, which finds the stop uncollected
		}
		parents[parent] = true
		if r.metaTask(r.l.tree.GetPid()).Report != "stopped" {
			if err := parent.collectReport(r.c.pid, unix.WSTOPPED); err != nil {
				return err
			}
		}
	}
	for _, r := range t.rs {
		if parents[r] {
			if err := r.consumeSIGCHLD(); err != nil {
				return err
			}
		}
	}
	return nil
}

// collectReport has the parent r collect the stop or continue report of
// child pid (which, WSTOPPED or WCONTINUED), as the original parent had.
func (r *restorer) collectReport(pid int, which int) error {
	p, err := r.c.arg(make([]byte, kabi.SiginfoSize))
	if err != nil {
		return err
	}
	if _, err := r.c.call(r.c.leader, "waitid", unix.SYS_WAITID, unix.P_PID, uint64(pid), p, uint64(which|unix.WNOHANG|waitAll), 0); err != nil {
		return fmt.Errorf("process %d: collect the report of child %d: %w", r.c.pid, pid, err)
	}
	b, err := r.c.out(p, kabi.SiginfoSize)
	if err != nil {
		return err
	}
	if got := int32(binary.LittleEndian.Uint32(b[16:])); got != int32(pid) {
		return fmt.Errorf("process %d: no report of child %d to collect", r.c.pid, pid)
	}
	return nil
}

// waitAll is __WALL: children whatever their exit signal.
const waitAll = 0x40000000

// continueAll is the continued stage, before anything of the processes'
// own: each process whose parent had a continue to collect is stopped and
// continued, and the SIGCHLDs and the SIGCONT this queued are taken back
// (none of the image's signals is queued yet).
func (t *treeRestorer) continueAll() error {
	for _, r := range t.rs[1:] {
		if r.l.zombie || r.metaTask(r.l.tree.GetPid()).Report != "continued" {
			continue
		}
		parent := t.byPid[r.l.tree.GetPpid()]
		if parent == nil || parent.c == nil {
			return fmt.Errorf("process %d: parent %d not restored", r.l.tree.GetPid(), r.l.tree.GetPpid())
		}
		if err := r.stopContinue(parent); err != nil {
			return fmt.Errorf("process %d, continued and not yet waited for: %w", r.c.pid, err)
		}
	}
	return nil
}

// stopContinue stops r with SIGSTOP and continues it: its parent then has
// a continue to collect and no stop (SIGCONT ends SIGNAL_STOP_STOPPED).
func (r *restorer) stopContinue(parent *restorer) error {
	c := r.c
	if err := r.groupStop(unix.SIGSTOP); err != nil {
		return err
	}
	if err := unix.Kill(c.pid, unix.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT: %w", err)
	}
	// The continued process tells its parent on its way through
	// get_signal (SIGNAL_CLD_CONTINUED): one more call; then the SIGCONT,
	// blocked and pending, is taken back.
	set := uint64(1) << (unix.SIGCONT - 1)
	sp, err := c.arg(kabi.Bytes(&set))
	if err != nil {
		return err
	}
	tp, err := c.arg(make([]byte, 16))
	if err != nil {
		return err
	}
	if _, err := c.call(c.leader, "rt_sigtimedwait SIGCONT", unix.SYS_RT_SIGTIMEDWAIT, sp, 0, tp, 8); err != nil {
		return err
	}
	if err := parent.checkReport(c.pid, unix.WCONTINUED); err != nil {
		return err
	}
	return parent.takeSIGCHLD()
}

// checkReport makes sure the parent r has a report of child pid to collect
// (which: WSTOPPED or WCONTINUED), collecting nothing.
func (r *restorer) checkReport(pid int, which int) error {
	p, err := r.c.arg(make([]byte, kabi.SiginfoSize))
	if err != nil {
		return err
	}
	const wnowait = 0x01000000
	if _, err := r.c.call(r.c.leader, "waitid(WNOWAIT)", unix.SYS_WAITID, unix.P_PID, uint64(pid), p, uint64(which|unix.WNOHANG|wnowait|waitAll), 0); err != nil {
		return err
	}
	b, err := r.c.out(p, kabi.SiginfoSize)
	if err != nil {
		return err
	}
	if got := int32(binary.LittleEndian.Uint32(b[16:])); got != int32(pid) {
		return fmt.Errorf("its parent %d has no report of it to collect", r.c.pid)
	}
	return nil
}

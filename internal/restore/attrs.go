package restore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Task attributes beside the credentials (dump's attrs.go says what they
// are). Each is given at the point the kernel lets it hold:
//
//   - the audit login uid, right after birth and before the process
//     forks or makes threads, which inherit it (bornSetup); it needs
//     CAP_AUDIT_CONTROL, which the credentials then take away;
//   - a new task's default timer slack is its creator's slack when it is
//     cloned: the creator is given that slack first (withSlack);
//   - timer slack, machine-check kill policy and I/O flusher with each
//     thread's own state (restoreThread), membarrier registrations with
//     the process's, once every child is forked (a fork would copy them);
//   - the parent-death signal after the credentials, since changing the
//     uids resets it (commit_creds), as it resets dumpability;
//   - dumpability, memory-deny-write-execute and seccomp strict mode last,
//     after the last injection that needs memory: a non-dumpable process
//     is closed to process_vm_writev, MDWE to new executable mappings,
//     and strict mode to every syscall but read, write, exit and
//     sigreturn (finish);
//   - scheduling policy, priority, nice, time slice, CPU affinity and I/O
//     priority from outside, when nothing of the restore is left to run
//     in the process: a SCHED_IDLE process would make it crawl.
//
// Whatever is set is read back.

// preflightAttrs refuses, before anything is started, attributes this
// machine or this restorer cannot give.
func (l *loaded) preflightAttrs() error {
	online, err := onlineCPUs()
	if err != nil {
		return err
	}
	own, err := procfs.OwnCaps()
	if err != nil {
		return fmt.Errorf("read cryo's capabilities: %w", err)
	}
	self, err := ownAudit()
	if err != nil {
		return err
	}
	audit := map[uint32]auditIDs{} // each process's, as restored
	for _, p := range l.procs {
		if p.zombie {
			continue
		}
		pid := p.tree.GetPid()
		inherited := self
		if p != l.procs[0] {
			inherited = audit[p.tree.GetPpid()]
		}
		want, err := l.wantAudit(p)
		if err != nil {
			return err
		}
		if want != inherited && want != unsetAudit {
			return fmt.Errorf("process %d has audit login uid %d, session %d: the kernel gives a new session id to whoever sets a login uid, so restore can only give the login and session it inherits (%d, %d) or none: %w",
				pid, int32(want.loginuid), int32(want.session), int32(inherited.loginuid), int32(inherited.session), ErrNotSupported)
		}
		if want != inherited && inherited.loginuid != kabi.AUDIT_UID_UNSET && !own.Has(unix.CAP_AUDIT_CONTROL) {
			return fmt.Errorf("process %d has no audit login uid: clearing the one it inherits (%d) needs CAP_AUDIT_CONTROL: %w", pid, inherited.loginuid, ErrCredsRefused)
		}
		audit[pid] = want
		if s := l.exitSignal(pid); s < 0 || s > 64 {
			return fmt.Errorf("process %d: exit signal %d: %w", pid, s, ErrNotSupported)
		}
		for i, c := range p.cores {
			tid := p.tree.Threads[i]
			tc := c.GetThreadCore()
			pol := tc.GetSchedPolicy() &^ unix.SCHED_RESET_ON_FORK
			switch pol {
			case unix.SCHED_NORMAL, unix.SCHED_FIFO, unix.SCHED_RR, unix.SCHED_BATCH, unix.SCHED_IDLE:
			default:
				return fmt.Errorf("thread %d: scheduling policy %d: %w", tid, pol, ErrNotSupported)
			}
			mt := l.metaTask(tid)
			for w, word := range mt.Affinity {
				if extra := word &^ wordOf(online, w); extra != 0 {
					return fmt.Errorf("thread %d may run only on CPUs %s, of which %s do not exist here (this machine has CPUs %s): %w",
						tid, cpuList(mt.Affinity), cpuList(maskOf(w, extra)), cpuList(online), ErrNotSupported)
				}
			}
			if len(mt.Affinity) > 0 && !anyCPU(mt.Affinity) {
				return fmt.Errorf("thread %d: empty CPU affinity: %w", tid, ErrNotSupported)
			}
			if mt.IOFlusher && !own.Has(unix.CAP_SYS_RESOURCE) {
				return fmt.Errorf("thread %d is an I/O flusher (PR_SET_IO_FLUSHER), which needs CAP_SYS_RESOURCE, which cryo lacks: %w", tid, ErrCredsRefused)
			}
			if d := mt.DefaultTimerSlack; d != nil && *d == 0 {
				return fmt.Errorf("thread %d has a default timer slack of 0 (it was made by a real-time thread), which restore cannot give: %w", tid, ErrNotSupported)
			}
			if mt.Sched != nil && (mt.Sched.UtilMin != nil || mt.Sched.UtilMax != nil) {
				return fmt.Errorf("thread %d has utilization clamps: %w", tid, ErrNotSupported)
			}
		}
		if m := p.cores[0].GetTc().GetMembarrierRegistrationMask(); m&^kabi.MEMBARRIER_REGISTRATIONS != 0 {
			return fmt.Errorf("process %d: membarrier registrations %#x: %w", pid, m, ErrNotSupported)
		}
		if m := l.metaTask(pid).MDWE; m&^(kabi.PR_MDWE_REFUSE_EXEC_GAIN|kabi.PR_MDWE_NO_INHERIT) != 0 {
			return fmt.Errorf("process %d: memory-deny-write-execute flags %#x: %w", pid, m, ErrNotSupported)
		}
	}
	return nil
}

// exitSignal is the signal process pid's parent gets when it exits
// (SIGCHLD unless the image says otherwise).
func (l *loaded) exitSignal(pid uint32) unix.Signal {
	if s := l.metaTask(pid).ExitSignal; s != nil {
		return unix.Signal(*s)
	}
	return unix.SIGCHLD
}

func (l *loaded) metaTask(tid uint32) *meta.Task {
	if l.meta != nil {
		if t := l.meta.Tasks[int(tid)]; t != nil {
			return t
		}
	}
	return &meta.Task{}
}

// auditIDs are a task's audit login uid and session id.
type auditIDs struct{ loginuid, session uint32 }

var unsetAudit = auditIDs{kabi.AUDIT_UID_UNSET, kabi.AUDIT_SID_UNSET}

// wantAudit is what process p's image asks: every thread the same (one
// that set its own would have a session of its own, which restore could
// not give either).
func (l *loaded) wantAudit(p *loaded) (auditIDs, error) {
	tc := p.cores[0].GetTc()
	if tc.Loginuid == nil {
		// Not recorded: the process keeps what it inherits.
		return auditIDs{}, nil
	}
	w := auditIDs{loginuid: tc.GetLoginuid(), session: kabi.AUDIT_SID_UNSET}
	if s := l.metaTask(p.tree.GetPid()).SessionID; s != nil {
		w.session = *s
	}
	for _, tid := range p.tree.Threads[1:] {
		if s := l.metaTask(tid).SessionID; s != nil && *s != w.session {
			return w, fmt.Errorf("thread %d has audit session %d, its process %d session %d: %w", tid, *s, p.tree.GetPid(), w.session, ErrNotSupported)
		}
	}
	return w, nil
}

// ownAudit is cryo's own login uid and session, which a process restored
// as the root inherits.
func ownAudit() (auditIDs, error) {
	a := unsetAudit
	for _, f := range []struct {
		name string
		v    *uint32
	}{{"loginuid", &a.loginuid}, {"sessionid", &a.session}} {
		b, err := os.ReadFile("/proc/self/" + f.name)
		if errors.Is(err, os.ErrNotExist) {
			continue // no CONFIG_AUDIT: nothing to give or take
		}
		if err != nil {
			return a, err
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return a, fmt.Errorf("/proc/self/%s: %q: %w", f.name, b, err)
		}
		*f.v = uint32(n)
	}
	return a, nil
}

// setAudit clears the audit login uid (and with it the session) of the
// process just born, if its image has none and it inherited one: writing
// -1 is the one change that gives a session id the image can have.
func (r *restorer) setAudit() error {
	if r.l.cores[0].GetTc().Loginuid == nil {
		return nil
	}
	want, err := r.t.l.wantAudit(r.l)
	if err != nil {
		return err
	}
	if want != unsetAudit {
		return nil // inherited as it is: preflight checked
	}
	got, err := taskAudit(r.c.pid, r.c.pid)
	if err != nil || got == unsetAudit {
		return err
	}
	c := r.c
	path, err := c.str("/proc/self/loginuid")
	if err != nil {
		return err
	}
	fd, err := c.call(c.leader, "open /proc/self/loginuid", unix.SYS_OPENAT, uint64(unixAtFdcwd), path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	val, err := c.str("4294967295")
	if err != nil {
		return err
	}
	_, werr := c.call(c.leader, "write /proc/self/loginuid", unix.SYS_WRITE, fd, val, 10)
	if _, err := c.call(c.leader, "close", unix.SYS_CLOSE, fd); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("clear the audit login uid %d it inherited: %w", int32(got.loginuid),
			hintPrivilege(werr, "changing a set login uid needs CAP_AUDIT_CONTROL, and the kernel may make it immutable (audit loginuid_immutable)"))
	}
	if got, err = taskAudit(r.c.pid, r.c.pid); err != nil {
		return err
	}
	if got != unsetAudit {
		return fmt.Errorf("audit login uid %d, session %d after clearing them", int32(got.loginuid), int32(got.session))
	}
	return nil
}

// taskAudit reads a task's audit login uid and session.
func taskAudit(pid, tid int) (auditIDs, error) {
	a := unsetAudit
	for _, f := range []struct {
		name string
		v    *uint32
	}{{"loginuid", &a.loginuid}, {"sessionid", &a.session}} {
		p := fmt.Sprintf("/proc/%d/task/%d/%s", pid, tid, f.name)
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return a, err
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return a, fmt.Errorf("%s: %q: %w", p, b, err)
		}
		*f.v = uint32(n)
	}
	return a, nil
}

// checkAudit reads back the audit ids, of the leader: its threads were
// made after it got them, and inherited them.
func (r *restorer) checkAudit() error {
	if r.l.cores[0].GetTc().Loginuid == nil {
		return nil
	}
	want, err := r.t.l.wantAudit(r.l)
	if err != nil {
		return err
	}
	for _, t := range r.c.threads[:1] {
		got, err := taskAudit(r.c.pid, t.Tid)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("thread %d: audit login uid %d, session %d after restore, want %d, %d",
				t.Tid, int32(got.loginuid), int32(got.session), int32(want.loginuid), int32(want.session))
		}
	}
	return nil
}

// slackOf is thread tid's timer slack and default slack from the image;
// ok is false if the image does not say.
func (l *loaded) slackOf(tid uint32) (slack, def uint64, ok bool) {
	mt := l.metaTask(tid)
	if mt.TimerSlack == nil || mt.DefaultTimerSlack == nil {
		return 0, 0, false
	}
	return *mt.TimerSlack, *mt.DefaultTimerSlack, true
}

// withSlack gives the thread t, which is about to create tid, the timer
// slack tid is to have as its default: a new task's default slack is its
// creator's slack at that instant (copy_process). cur is t's slack now,
// updated.
func withSlack(t *inject.Task, cur *uint64, def uint64) error {
	if *cur == def {
		return nil
	}
	if _, err := t.Call("prctl(PR_SET_TIMERSLACK)", unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, def); err != nil {
		return err
	}
	*cur = def
	return nil
}

// addThreadAttrs adds to thread i's batch what it holds of its own: its
// timer slack (the default came with its creation), machine-check kill
// policy and I/O flusher flag.
func (r *restorer) addThreadAttrs(b *inject.Batch, i int) {
	tid := r.l.tree.Threads[i]
	tc := r.l.cores[i].GetThreadCore()
	mt := r.t.l.metaTask(tid)
	rt := isRT(tc.GetSchedPolicy())
	if slack, def, ok := r.t.l.slackOf(tid); ok && !rt && slack != def {
		// A real-time thread has no slack; the kernel takes it away when
		// finish gives the policy, and gives the default back when the
		// thread leaves the class.
		b.Add("prctl(PR_SET_TIMERSLACK)", unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, slack)
	}
	switch mt.MCEKill {
	case "early":
		b.Add("prctl(PR_MCE_KILL early)", unix.SYS_PRCTL, unix.PR_MCE_KILL, unix.PR_MCE_KILL_SET, unix.PR_MCE_KILL_EARLY)
	case "late":
		b.Add("prctl(PR_MCE_KILL late)", unix.SYS_PRCTL, unix.PR_MCE_KILL, unix.PR_MCE_KILL_SET, unix.PR_MCE_KILL_LATE)
	}
	if mt.IOFlusher {
		b.Add("prctl(PR_SET_IO_FLUSHER)", unix.SYS_PRCTL, unix.PR_SET_IO_FLUSHER, 1)
	}
}

func isRT(policy uint32) bool {
	p := policy &^ unix.SCHED_RESET_ON_FORK
	return p == unix.SCHED_FIFO || p == unix.SCHED_RR
}

// addMembarrier adds the process's membarrier registrations to its batch.
func (r *restorer) addMembarrier(b *inject.Batch) {
	m := r.l.cores[0].GetTc().GetMembarrierRegistrationMask()
	for cmd := uint32(1); cmd <= kabi.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ; cmd <<= 1 {
		if m&cmd != 0 {
			b.Add("membarrier register "+strconv.Itoa(int(cmd)), unix.SYS_MEMBARRIER, uint64(cmd), 0, 0)
		}
	}
}

// afterCreds gives thread t what a change of its uids has reset: the
// parent-death signal.
func (r *restorer) afterCreds(t *inject.Task, i int) error {
	if d := r.l.cores[i].GetThreadCore().GetPdeathSig(); d != 0 {
		if _, err := r.c.call(t, "prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(d)); err != nil {
			return err
		}
	}
	return nil
}

// lastCalls are the calls of finish after the scratch area is gone, made
// through the vdso's syscall instruction with nothing in memory: the
// process's dumpability and memory-deny-write-execute, then each thread's
// seccomp strict mode, after which a thread may make no other call.
func (r *restorer) lastCalls(ip uint64) error {
	c := r.c
	mm := r.l.mm
	if mm.Dumpable != nil {
		want := uint64(mm.GetDumpable())
		got, err := c.call(c.leader, "prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
		if err != nil {
			return err
		}
		if got != want {
			if want > 1 {
				return fmt.Errorf("dumpable %d (SUID_DUMP_ROOT): prctl can give only 0 or 1, and the kernel gave %d here: %w", want, got, ErrNotSupported)
			}
			if _, err := c.call(c.leader, "prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, want); err != nil {
				return err
			}
		}
	}
	if err := r.lockFuture(); err != nil {
		return err
	}
	if err := r.sealAll(); err != nil {
		return err
	}
	if m := r.t.l.metaTask(r.l.tree.GetPid()).MDWE; m != 0 {
		if _, err := c.call(c.leader, "prctl(PR_SET_MDWE)", unix.SYS_PRCTL, unix.PR_SET_MDWE, m); err != nil {
			return err
		}
		got, err := c.call(c.leader, "prctl(PR_GET_MDWE)", unix.SYS_PRCTL, unix.PR_GET_MDWE)
		if err != nil {
			return err
		}
		if got != m {
			return fmt.Errorf("memory-deny-write-execute %#x after restore, want %#x", got, m)
		}
	}
	if err := r.checkHeld(); err != nil {
		return err
	}
	suspended := canSuspendSeccomp()
	if !suspended {
		if err := r.queueHeld(ip); err != nil {
			return err
		}
	}
	for i, t := range c.threads {
		if r.l.cores[i].GetThreadCore().GetSeccompMode() != core.SeccompMode_strict {
			continue
		}
		t.SetSyscallIP(ip, false)
		// The kernel answers a call strict mode forbids with SIGKILL, so
		// nothing may be asked after this one; restore's own calls pass
		// only when ptrace suspends seccomp, which needs CAP_SYS_ADMIN.
		if _, err := c.call(t, "prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)", unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_STRICT); err != nil {
			return err
		}
		st, err := procfs.TaskStatusPid(c.pid, t.Tid)
		if err != nil {
			return err
		}
		if st.Seccomp != unix.SECCOMP_MODE_STRICT {
			return fmt.Errorf("thread %d: seccomp mode %d after entering strict mode", t.Tid, st.Seccomp)
		}
	}
	if suspended {
		// Seccomp judges none of restore's calls: strict mode goes in
		// before, and the held signals can still follow.
		return r.queueHeld(ip)
	}
	return nil
}

// heldSignal is a pending signal of the image that is queued last, after
// the last call that resumes the thread that would take it: SIGSTOP.
type heldSignal struct {
	t      *inject.Task
	shared bool // the process's queue
	info   []byte
}

// checkHeld refuses held signals that cannot be queued last: their siginfo
// goes below the thread's stack, which a process that is not dumpable
// closes to a restorer without CAP_SYS_PTRACE, and the call that queues it
// is one strict mode forbids, unless ptrace suspends seccomp.
func (r *restorer) checkHeld() error {
	if len(r.held) == 0 {
		return nil
	}
	if r.l.mm.Dumpable != nil && r.l.mm.GetDumpable() != 1 {
		if own, err := procfs.OwnCaps(); err != nil || !own.Has(unix.CAP_SYS_PTRACE) {
			return fmt.Errorf("a pending SIGSTOP and dumpable %d: queueing it last needs CAP_SYS_PTRACE: %w", r.l.mm.GetDumpable(), ErrNotSupported)
		}
	}
	if !canSuspendSeccomp() {
		// Then strict mode comes after the held signals, and the call that
		// enters it lets the thread take one meant for it or its process.
		for i, c := range r.l.cores {
			if c.GetThreadCore().GetSeccompMode() == core.SeccompMode_strict {
				return fmt.Errorf("thread %d is in seccomp strict mode and a SIGSTOP is pending: restore can queue it only after strict mode, with seccomp suspended (CAP_SYS_ADMIN): %w", r.c.threads[i].Tid, ErrNotSupported)
			}
		}
	}
	return nil
}

// threadIndex is t's place in the process's threads (and cores).
func (r *restorer) threadIndex(t *inject.Task) int {
	for i, u := range r.c.threads {
		if u == t {
			return i
		}
	}
	return -1
}

// queueHeld queues the held signals, each by an injected call through the
// vdso's syscall instruction that takes the siginfo from below the red
// zone of the thread's own stack (the scratch area is gone), put back
// after: the thread takes the signal once it is let go, as it would have.
func (r *restorer) queueHeld(ip uint64) error {
	c := r.c
	for _, h := range r.held {
		i := r.threadIndex(h.t)
		if i < 0 {
			return fmt.Errorf("held signal of thread %d: no such thread", h.t.Tid)
		}
		st := inject.NewStack(c.pid, r.l.cores[i].GetThreadInfo().GetGpregs().GetSp())
		addr, err := st.Put(h.info)
		if err != nil {
			return fmt.Errorf("thread %d: pending SIGSTOP: %w", h.t.Tid, err)
		}
		h.t.SetSyscallIP(ip, false)
		if h.shared {
			_, err = c.call(h.t, "rt_sigqueueinfo SIGSTOP", unix.SYS_RT_SIGQUEUEINFO, uint64(c.pid), uint64(unix.SIGSTOP), addr)
		} else {
			_, err = c.call(h.t, "rt_tgsigqueueinfo SIGSTOP", unix.SYS_RT_TGSIGQUEUEINFO, uint64(c.pid), uint64(h.t.Tid), uint64(unix.SIGSTOP), addr)
		}
		if perr := st.PutBack(); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// setSched gives every thread, from outside, its scheduling policy,
// priority, nice, time slice, CPU affinity and I/O priority, and reads
// them back. Nothing of the restore runs in the process any more.
func (r *restorer) setSched() error {
	for i, t := range r.c.threads {
		if err := r.setThreadSched(t.Tid, i); err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
	}
	return nil
}

func (r *restorer) setThreadSched(tid, i int) error {
	tc := r.l.cores[i].GetThreadCore()
	mt := r.t.l.metaTask(r.l.tree.Threads[i])
	pol := tc.GetSchedPolicy()
	want := unix.SchedAttr{Policy: pol &^ unix.SCHED_RESET_ON_FORK, Nice: tc.GetSchedNice(), Priority: tc.GetSchedPrio()}
	if pol&unix.SCHED_RESET_ON_FORK != 0 {
		want.Flags = unix.SCHED_FLAG_RESET_ON_FORK
	}
	custom := mt.Sched != nil && mt.Sched.Runtime != 0
	cur, err := r.threadSched(tid)
	if err != nil {
		return err
	}
	if !isRT(pol) {
		want.Runtime = cur.Runtime // the kernel's slice, unless it asked for one
		if custom {
			want.Runtime = mt.Sched.Runtime
		}
	}
	// sched_setattr gives the nice value and the time slice only with a
	// fair policy (SCHED_OTHER, SCHED_BATCH); a thread of another class
	// keeps them for when it leaves it. Such a thread gets them first.
	fair := want.Policy == unix.SCHED_NORMAL || want.Policy == unix.SCHED_BATCH
	if !fair && (cur.Nice != want.Nice || (!isRT(pol) && cur.Runtime != want.Runtime)) {
		first := unix.SchedAttr{Policy: unix.SCHED_NORMAL, Nice: want.Nice, Flags: want.Flags}
		if custom {
			first.Runtime = want.Runtime
		}
		if err := unix.SchedSetAttr(tid, &first, 0); err != nil {
			return fmt.Errorf("nice %d: %w", want.Nice, hintPrivilege(err, "a nice value below cryo's own needs CAP_SYS_NICE"))
		}
		if cur, err = r.threadSched(tid); err != nil {
			return err
		}
	}
	if schedDiffers(cur, &want) {
		set := want
		if !custom {
			set.Runtime = 0 // asking for no slice keeps the kernel's
		}
		if err := unix.SchedSetAttr(tid, &set, 0); err != nil {
			return fmt.Errorf("%s: %w", describeSched(&want), hintPrivilege(err, "a real-time policy, or a nice value below cryo's own, needs CAP_SYS_NICE"))
		}
		got, err := r.threadSched(tid)
		if err != nil {
			return err
		}
		if schedDiffers(got, &want) {
			return fmt.Errorf("scheduling is %s after restore, want %s", describeSched(got), describeSched(&want))
		}
	}
	if len(mt.Affinity) > 0 {
		var set, got unix.CPUSet
		for cpu := 0; cpu < 64*len(mt.Affinity); cpu++ {
			if mt.Affinity[cpu/64]&(1<<(cpu%64)) != 0 {
				set.Set(cpu)
			}
		}
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			return fmt.Errorf("sched_getaffinity: %w", err)
		}
		if got != set {
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				return fmt.Errorf("CPU affinity %s: %w", cpuList(mt.Affinity), err)
			}
			if err := unix.SchedGetaffinity(tid, &got); err != nil {
				return fmt.Errorf("sched_getaffinity: %w", err)
			}
		}
		if got != set {
			// sched_setaffinity keeps only the CPUs cryo's cpuset allows.
			return fmt.Errorf("CPU affinity %s: this machine gives %s (cryo's cpuset): %w", cpuList(mt.Affinity), cpuList(words(&got)), ErrNotSupported)
		}
	}
	return r.setIoprio(tid, mt.Ioprio, want)
}

// threadSched is what sched_getattr shows of thread tid, with its nice
// value whatever its policy: sched_getattr shows none for a real-time
// thread, getpriority does.
func (r *restorer) threadSched(tid int) (*unix.SchedAttr, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return nil, fmt.Errorf("sched_getattr: %w", err)
	}
	// The raw getpriority returns 20 - nice, to stay positive.
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return nil, fmt.Errorf("getpriority: %w", err)
	}
	a.Nice = int32(20 - prio)
	return a, nil
}

// setIoprio gives thread tid its I/O priority. A thread that has an I/O
// context but no class of its own (IOPRIO_CLASS_NONE) shows the class and
// level its scheduling gives it; one without a context shows 0. Such a
// value is given as IOPRIO_CLASS_NONE, which then shows the same, and
// goes on following the thread's nice value as it did.
func (r *restorer) setIoprio(tid, want int, sched unix.SchedAttr) error {
	got, err := kabi.IoprioGet(tid)
	if err != nil {
		return fmt.Errorf("ioprio_get: %w", err)
	}
	if got == want {
		return nil
	}
	set := want
	if want == niceIoprio(sched) {
		set = kabi.IOPRIO_CLASS_NONE << kabi.IOPRIO_CLASS_SHIFT
	}
	if err := kabi.IoprioSet(tid, set); err != nil {
		return fmt.Errorf("I/O priority %s: %w", ioprioName(want), hintPrivilege(err, "the real-time I/O class, or a priority above cryo's own, needs CAP_SYS_ADMIN or CAP_SYS_NICE"))
	}
	if got, err = kabi.IoprioGet(tid); err != nil {
		return fmt.Errorf("ioprio_get: %w", err)
	}
	if got != want {
		return fmt.Errorf("I/O priority %s after restore, want %s", ioprioName(got), ioprioName(want))
	}
	return nil
}

// niceIoprio is what ioprio_get shows of a thread of class NONE: the class
// and level its scheduling maps to (task_nice_ioclass, task_nice_ioprio).
func niceIoprio(s unix.SchedAttr) int {
	class := kabi.IOPRIO_CLASS_BE
	switch s.Policy {
	case unix.SCHED_IDLE:
		class = kabi.IOPRIO_CLASS_IDLE
	case unix.SCHED_FIFO, unix.SCHED_RR:
		class = kabi.IOPRIO_CLASS_RT
	}
	return class<<kabi.IOPRIO_CLASS_SHIFT | int(s.Nice+20)/5
}

func ioprioName(v int) string {
	class := v >> kabi.IOPRIO_CLASS_SHIFT
	names := []string{"none", "realtime", "best-effort", "idle"}
	if class < len(names) {
		return fmt.Sprintf("%s/%d", names[class], v&(1<<kabi.IOPRIO_CLASS_SHIFT-1))
	}
	return fmt.Sprintf("%#x", v)
}

// schedDiffers compares what sched_getattr shows of a thread's policy.
func schedDiffers(got, want *unix.SchedAttr) bool {
	if got.Policy != want.Policy || got.Flags&unix.SCHED_FLAG_RESET_ON_FORK != want.Flags&unix.SCHED_FLAG_RESET_ON_FORK || got.Nice != want.Nice {
		return true
	}
	if isRT(want.Policy) {
		return got.Priority != want.Priority
	}
	return got.Runtime != want.Runtime
}

func describeSched(a *unix.SchedAttr) string {
	names := map[uint32]string{unix.SCHED_NORMAL: "SCHED_OTHER", unix.SCHED_FIFO: "SCHED_FIFO", unix.SCHED_RR: "SCHED_RR",
		unix.SCHED_BATCH: "SCHED_BATCH", unix.SCHED_IDLE: "SCHED_IDLE"}
	s := names[a.Policy]
	if s == "" {
		s = "policy " + strconv.Itoa(int(a.Policy))
	}
	if isRT(a.Policy) {
		s += fmt.Sprintf(" priority %d", a.Priority)
	} else {
		s += fmt.Sprintf(" slice %d ns", a.Runtime)
	}
	s += fmt.Sprintf(" nice %d", a.Nice)
	if a.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0 {
		s += " reset-on-fork"
	}
	return s
}

// onlineCPUs is the mask of the CPUs this machine runs
// (/sys/devices/system/cpu/online), 64 a word.
func onlineCPUs() ([]uint64, error) {
	b, err := procfs.ReadFileBounded("/sys/devices/system/cpu/online", 4096)
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	m, err := procfs.ParseCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("/sys/devices/system/cpu/online: %w", err)
	}
	return m, nil
}

func wordOf(m []uint64, w int) uint64 {
	if w < len(m) {
		return m[w]
	}
	return 0
}

func maskOf(w int, word uint64) []uint64 {
	m := make([]uint64, w+1)
	m[w] = word
	return m
}

func anyCPU(m []uint64) bool {
	for _, w := range m {
		if w != 0 {
			return true
		}
	}
	return false
}

func words(set *unix.CPUSet) []uint64 {
	out := make([]uint64, len(set))
	for i := range set {
		out[i] = uint64(set[i])
	}
	return out
}

// cpuList prints a CPU mask as the kernel's lists do: "0-3,8".
func cpuList(m []uint64) string {
	var parts []string
	for cpu := 0; cpu < 64*len(m); cpu++ {
		if m[cpu/64]&(1<<(cpu%64)) == 0 {
			continue
		}
		end := cpu
		for end+1 < 64*len(m) && m[(end+1)/64]&(1<<((end+1)%64)) != 0 {
			end++
		}
		if end == cpu {
			parts = append(parts, strconv.Itoa(cpu))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpu, end))
		}
		cpu = end
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

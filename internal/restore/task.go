package restore

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"strconv"

	"golang.org/x/sys/unix"

	x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/xstate"
)

func gpregs(g *x86.UserX86RegsEntry) unix.PtraceRegs {
	return unix.PtraceRegs{
		R15: g.GetR15(), R14: g.GetR14(), R13: g.GetR13(), R12: g.GetR12(),
		Rbp: g.GetBp(), Rbx: g.GetBx(), R11: g.GetR11(), R10: g.GetR10(),
		R9: g.GetR9(), R8: g.GetR8(), Rax: g.GetAx(), Rcx: g.GetCx(),
		Rdx: g.GetDx(), Rsi: g.GetSi(), Rdi: g.GetDi(), Orig_rax: g.GetOrigAx(),
		Rip: g.GetIp(), Cs: g.GetCs(), Eflags: g.GetFlags(), Rsp: g.GetSp(),
		Ss: g.GetSs(), Fs_base: g.GetFsBase(), Gs_base: g.GetGsBase(),
		Ds: g.GetDs(), Es: g.GetEs(), Fs: g.GetFs(), Gs: g.GetGs(),
	}
}

// hostXCR0 is what a fresh thread of cryo's own reports as xfeatures: the
// components this CPU and kernel save.
func hostXCR0() uint64 { return xstate.HostFeatures() }

// vdsoHashOf hashes the [vdso] of pid, to compare with an image's.
func vdsoHashOf(pid int) (string, error) {
	maps, err := procfs.MapsPid(pid)
	if err != nil {
		return "", err
	}
	for _, m := range maps {
		if m.Kind != procfs.KindVdso {
			continue
		}
		b := make([]byte, m.End-m.Start)
		if err := ptrace.ReadMem(pid, m.Start, b); err != nil {
			return "", err
		}
		return fmt.Sprintf("%x", sha256.Sum256(b)), nil
	}
	return "", nil
}

// restoreProcess puts back what the threads share: signal handlers,
// itimers, POSIX timers, rlimits, personality, oom_score_adj, and the
// process-wide pending signals (queued last but for thread ones). The
// handlers and itimers are independent calls: one batch.
func (r *restorer) restoreProcess() error {
	c, tc := r.c, r.l.cores[0].GetTc()
	b := c.batch()
	for sig, act := range sigactions(tc) {
		b.AddArg("rt_sigaction "+strconv.Itoa(sig), kabi.Bytes(&act), unix.SYS_RT_SIGACTION, func(p uint64) []uint64 {
			return []uint64{uint64(sig), p, 0, 8}
		})
	}
	if t := tc.GetTimers(); t != nil {
		for which, it := range []*itimerEntry{t.GetReal(), t.GetVirt(), t.GetProf()} {
			v := kabi.Itimerval{IntervalSec: int64(it.GetIsec()), IntervalUsec: int64(it.GetIusec()), ValueSec: int64(it.GetVsec()), ValueUsec: int64(it.GetVusec())}
			if v.ValueSec == 0 && v.ValueUsec == 0 {
				continue
			}
			b.AddArg("setitimer "+strconv.Itoa(which), kabi.Bytes(&v), unix.SYS_SETITIMER, func(p uint64) []uint64 {
				return []uint64{uint64(which), p, 0}
			})
		}
	}
	r.addMembarrier(b)
	if err := b.Run(); err != nil {
		return err
	}
	if tc.GetTimers() != nil {
		if err := r.restoreTimers(); err != nil {
			return err
		}
	}
	for i, rl := range tc.GetRlimits().GetRlimits() {
		lim := unix.Rlimit{Cur: rl.GetCur(), Max: rl.GetMax()}
		if err := unix.Prlimit(c.pid, i, &lim, nil); err != nil {
			return fmt.Errorf("rlimit %d of %d: %w", i, c.pid, hintPrivilege(err, "raising a hard limit above cryo's own needs CAP_SYS_RESOURCE"))
		}
	}
	if p := tc.GetPersonality(); p != 0 {
		if _, err := c.call(c.leader, "personality", unix.SYS_PERSONALITY, uint64(p)); err != nil {
			return err
		}
	}
	if tc.OomScoreAdj != nil {
		if err := setOomScoreAdj(c.pid, int(tc.GetOomScoreAdj())); err != nil {
			return err
		}
	}
	return r.queueSignals(c.leader, tc.GetSignalsS(), true)
}

// sigactions yields the image's signal actions other than SIG_DFL (which
// the new process has), by signal number. CRIU stores SIGMAX-2 of them:
// SIGKILL and SIGSTOP have none.
func sigactions(tc *core.TaskCoreEntry) iter.Seq2[int, kabi.Sigaction] {
	return func(yield func(int, kabi.Sigaction) bool) {
		sig := 0
		for _, a := range tc.GetSigactions() {
			sig++
			if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
				sig++
			}
			if a.GetSigaction() == 0 && a.GetFlags() == 0 && a.GetMask() == 0 {
				continue
			}
			if !yield(sig, kabi.Sigaction{Handler: a.GetSigaction(), Flags: a.GetFlags(), Restorer: a.GetRestorer(), Mask: a.GetMask()}) {
				return
			}
		}
	}
}

// keepTrapIgnored makes an ignored SIGTRAP of the image survive the rest
// of the restore. Every injection through the scratch area ends on its
// int3, and the kernel resets the action of a signal it forces to SIG_DFL
// when the signal is ignored (kernel/signal.c, force_sig_info_to_task; a
// handler is kept). So once every thread's own state is in, the threads
// inject with two syscall stops and no int3 (no more batches), and the
// action is set again. It runs before credentials and seccomp filters, so
// that these judge no more calls than before.
func (r *restorer) keepTrapIgnored() error {
	c := r.c
	for sig, act := range sigactions(r.l.cores[0].GetTc()) {
		if sig != int(unix.SIGTRAP) || act.Handler != sigIgn {
			continue
		}
		for _, t := range c.threads {
			t.SetSyscallIP(t.SyscallIP(), false)
		}
		p, err := c.arg(kabi.Bytes(&act))
		if err != nil {
			return err
		}
		_, err = c.call(c.leader, "rt_sigaction "+strconv.Itoa(sig), unix.SYS_RT_SIGACTION, uint64(sig), p, 0, 8)
		return err
	}
	return nil
}

// sigIgn is SIG_IGN as a handler address.
const sigIgn = 1

type itimerEntry = timer.ItimerEntry

// restoreTimers re-creates POSIX timers with their ids (the kernel hands
// out the id asked for while PR_TIMER_CREATE_RESTORE_IDS is on, 6.15+),
// notification, and remaining time.
func (r *restorer) restoreTimers() error {
	c := r.c
	timers := r.l.cores[0].GetTc().GetTimers().GetPosix()
	if len(timers) == 0 {
		return nil
	}
	if _, err := c.call(c.leader, "prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_ON); err != nil {
		return fmt.Errorf("%w (%v)", err, feature.TimerRestoreIDs.Check())
	}
	for _, t := range timers {
		ev := kabi.Sigevent{Value: t.GetSivalPtr(), Signo: int32(t.GetSiSigno()), Notify: int32(t.GetItSigevNotify()), Tid: t.GetNotifyThreadId()}
		evp, err := c.arg(kabi.Bytes(&ev))
		if err != nil {
			return err
		}
		var id [4]byte
		binary.LittleEndian.PutUint32(id[:], t.GetItId())
		idp, err := c.arg(id[:])
		if err != nil {
			return err
		}
		if _, err := c.leader.Call("timer_create", unix.SYS_TIMER_CREATE, uint64(t.GetClockId()), evp, idp); err != nil {
			return err
		}
		got, err := c.out(idp, 4)
		if err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(got) != t.GetItId() {
			return fmt.Errorf("timer_create gave id %d, wanted %d", binary.LittleEndian.Uint32(got), t.GetItId())
		}
		spec := kabi.Itimerspec{IntervalSec: int64(t.GetIsec()), IntervalNsec: int64(t.GetInsec()), ValueSec: int64(t.GetVsec()), ValueNsec: int64(t.GetVnsec())}
		if spec.ValueSec == 0 && spec.ValueNsec == 0 {
			continue
		}
		sp, err := c.arg(kabi.Bytes(&spec))
		if err != nil {
			return err
		}
		if _, err := c.call(c.leader, "timer_settime", unix.SYS_TIMER_SETTIME, uint64(t.GetItId()), 0, sp, 0); err != nil {
			return err
		}
	}
	_, err := c.call(c.leader, "prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_OFF)
	return err
}

// queueSignals puts pending signals back, siginfo intact, in the order
// they were queued: one batch. They stay pending: every signal is blocked
// until finish.
func (r *restorer) queueSignals(t *inject.Task, q *siginfo.SignalQueueEntry, shared bool) error {
	b := t.Batch()
	if err := r.addSignals(b, t, q, shared); err != nil {
		return err
	}
	return b.Run()
}

func (r *restorer) addSignals(b *inject.Batch, t *inject.Task, q *siginfo.SignalQueueEntry, shared bool) error {
	c := r.c
	for _, s := range q.GetSignals() {
		raw := s.GetSiginfo()
		if len(raw) != kabi.SiginfoSize {
			return fmt.Errorf("pending signal of %d: siginfo of %d bytes", t.Tid, len(raw))
		}
		var si kabi.Siginfo
		copy(si[:], raw)
		signo := uint64(si.Signo())
		if si.Signo() == int(unix.SIGSTOP) {
			// SIGSTOP cannot be blocked: any call injected after it was
			// queued would take it. It is queued last (queueHeld).
			r.held = append(r.held, heldSignal{t: t, shared: shared, info: raw})
			continue
		}
		name := "re-queue signal " + strconv.Itoa(si.Signo())
		if shared {
			b.AddArg(name+" (rt_sigqueueinfo)", raw, unix.SYS_RT_SIGQUEUEINFO, func(p uint64) []uint64 {
				return []uint64{uint64(c.pid), signo, p}
			})
		} else {
			b.AddArg(name+" (rt_tgsigqueueinfo)", raw, unix.SYS_RT_TGSIGQUEUEINFO, func(p uint64) []uint64 {
				return []uint64{uint64(c.pid), uint64(t.Tid), signo, p}
			})
		}
	}
	return nil
}

// makeThreads makes every thread but the leader with its dumped tid. They
// are made early, once the address space is in and before the process
// forks, since a child of the image may be a thread's child (see
// treeRestorer.fork): early is true then. Threads that share seccomp
// filters beyond what TSYNC can give are made by the thread holding those
// filters, as they are installed (seccomp.go), which must wait for the
// task stage: the process's children would inherit the filters.
func (r *restorer) makeThreads(early bool) error {
	if r.threadsMade {
		return nil
	}
	c := r.c
	if c.threadSlack == nil {
		c.threadSlack = map[int]uint64{}
	}
	plan, err := r.planSeccomp()
	if err != nil {
		return err
	}
	r.seccomp = plan
	if plan != nil && plan.inherit {
		if early {
			return nil
		}
		r.threadsMade = true
		return r.createThreadsInheriting(plan)
	}
	for _, tid := range r.l.tree.Threads[1:] {
		t, err := r.cloneThread(c.leader, &c.slack, tid)
		if err != nil {
			return err
		}
		c.threads = append(c.threads, t)
	}
	r.threadsMade = true
	return nil
}

// cloneThread has thread from make thread tid, with from's slack (cur,
// updated) set to tid's default slack first.
func (r *restorer) cloneThread(from *inject.Task, cur *uint64, tid uint32) (*inject.Task, error) {
	c := r.c
	if _, def, ok := r.t.l.slackOf(tid); ok {
		if err := withSlack(from, cur, def); err != nil {
			return nil, fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(tid))
	tp, err := c.arg(b[:])
	if err != nil {
		return nil, err
	}
	args := kabi.CloneArgs{
		Flags:  unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM,
		SetTid: tp, SetTidSize: 1,
	}
	ap, err := c.arg(kabi.Bytes(&args))
	if err != nil {
		return nil, err
	}
	ret, err := c.call(from, "clone3 thread "+strconv.Itoa(int(tid)), unix.SYS_CLONE3, ap, uint64(len(kabi.Bytes(&args))))
	if err != nil {
		if pe := pidFree(int(tid)); pe != nil {
			return nil, pe
		}
		return nil, err
	}
	t, err := ptrace.Attached(int(ret))
	if err != nil {
		return nil, fmt.Errorf("new thread %d: %w", ret, err)
	}
	// A new thread's slack is its creator's.
	c.threadSlack[int(ret)] = *cur
	return inject.Built(t, c.mem), nil
}

// restoreThread puts back the state each thread has of its own. The calls
// are independent of each other: one batch, with the thread's pending
// signals queued last.
func (r *restorer) restoreThread(t *inject.Task, i int) error {
	core := r.l.cores[i]
	tc := core.GetThreadCore()
	b := t.Batch()
	if sas := tc.GetSas(); sas != nil && sas.GetSsFlags()&ssDisable == 0 && sas.GetSsSize() != 0 {
		st := kabi.Stack{Sp: sas.GetSsSp(), Size: sas.GetSsSize(), Flags: int32(sas.GetSsFlags() &^ ssOnstack)}
		b.AddArg("sigaltstack", kabi.Bytes(&st), unix.SYS_SIGALTSTACK, func(p uint64) []uint64 { return []uint64{p, 0} })
	}
	if tc.GetFutexRla() != 0 {
		b.Add("set_robust_list", unix.SYS_SET_ROBUST_LIST, tc.GetFutexRla(), uint64(tc.GetFutexRlaLen()))
	}
	b.Add("set_tid_address", unix.SYS_SET_TID_ADDRESS, core.GetThreadInfo().GetClearTidAddr())
	if rs := tc.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		b.Add("rseq", unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature()))
	}
	comm := tc.GetComm()
	if comm == "" && core.GetTc() != nil {
		comm = core.GetTc().GetComm()
	}
	if comm != "" {
		b.AddArg("prctl(PR_SET_NAME)", append([]byte(comm), 0), unix.SYS_PRCTL, func(p uint64) []uint64 { return []uint64{unix.PR_SET_NAME, p} })
	}
	// The parent-death signal comes after the credentials, which reset
	// it (afterCreds); scheduling, nice and affinity last (setSched).
	r.addThreadAttrs(b, i)
	if err := r.addSignals(b, t, tc.GetSignalsP(), false); err != nil {
		return err
	}
	err := b.Run()
	var se *inject.StepError
	if errors.As(err, &se) && se.Name == "rseq" {
		// Say why as `cryo check` would: the kernel may lack rseq.
		if perr := feature.Rseq.Check(); perr != nil {
			return fmt.Errorf("%w: %w", err, perr)
		}
	}
	return err
}

// sigaltstack flags (include/uapi/linux/signal.h).
const (
	ssOnstack = 1
	ssDisable = 2
)

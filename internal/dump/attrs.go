package dump

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Task attributes beside the credentials: scheduling (policy, priority,
// nice, reset-on-fork, the fair class's time slice), CPU affinity, I/O
// priority, timer slack, the audit login uid and session, machine-check
// kill policy, I/O flusher, memory-deny-write-execute and membarrier
// registrations. What can be read from outside is (sched_getattr,
// sched_getaffinity, ioprio_get, /proc); the rest the thread is asked.

// attrs is what one thread has of them.
type attrs struct {
	sched     *unix.SchedAttr
	affinity  []uint64
	ioprio    int
	loginuid  uint32
	sessionid *uint32
	slack     uint64
	defSlack  uint64
	mceKill   int
	ioFlusher bool
	// of the process, asked of its leader
	mdwe       uint64
	membarrier uint32
}

// collectAttrs reads thread th's attributes.
func (p *process) collectAttrs(th *thread) error {
	tid := th.t.Tid
	a := &th.attrs
	var err error
	if a.sched, err = unix.SchedGetAttr(tid, 0); err != nil {
		return fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	// sched_getattr shows no nice value of a real-time thread, which
	// keeps one for when it leaves its class; /proc's stat shows it.
	a.sched.Nice = int32(th.stat.Nice)
	switch a.sched.Policy {
	case unix.SCHED_NORMAL, unix.SCHED_FIFO, unix.SCHED_RR, unix.SCHED_BATCH, unix.SCHED_IDLE:
	case unix.SCHED_DEADLINE:
		return fmt.Errorf("thread %d runs SCHED_DEADLINE (runtime %d ns, deadline %d ns, period %d ns), which CRIU's image cannot hold and restore does not give: %w",
			tid, a.sched.Runtime, a.sched.Deadline, a.sched.Period, ErrNotSupported)
	default:
		return fmt.Errorf("thread %d: scheduling policy %d: %w", tid, a.sched.Policy, ErrNotSupported)
	}
	if a.sched.Util_min != 0 || a.sched.Util_max != 0 {
		// A kernel without CONFIG_UCLAMP_TASK shows 0 and 0; one with it
		// shows 0 and 1024 until the thread asks for clamps.
		if a.sched.Util_min != 0 || a.sched.Util_max != 1024 {
			return fmt.Errorf("thread %d has utilization clamps (uclamp min %d, max %d): %w", tid, a.sched.Util_min, a.sched.Util_max, ErrNotSupported)
		}
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return fmt.Errorf("thread %d: sched_getaffinity: %w", tid, err)
	}
	a.affinity = cpuWords(&set)
	if a.ioprio, err = kabi.IoprioGet(tid); err != nil {
		return fmt.Errorf("thread %d: ioprio_get: %w", tid, err)
	}
	dir := fmt.Sprintf("/proc/%d/task/%d/", p.pid, tid)
	if v, ok, err := readUint32(dir + "loginuid"); err != nil {
		return err
	} else if ok {
		a.loginuid = v
	} else {
		a.loginuid = kabi.AUDIT_UID_UNSET
	}
	if v, ok, err := readUint32(dir + "sessionid"); err != nil {
		return err
	} else if ok {
		a.sessionid = &v
	}
	// PR_GET_IO_FLUSHER needs CAP_SYS_RESOURCE in the thread itself; the
	// flags it reads are in /proc/PID/stat for anyone.
	a.ioFlusher = th.stat.Flags&kabi.PF_IO_FLUSHER == kabi.PF_IO_FLUSHER

	if a.slack, a.defSlack, err = p.timerSlack(th); err != nil {
		return err
	}
	_, v, err := th.call("prctl(PR_MCE_KILL_GET)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_MCE_KILL_GET} })
	if err != nil {
		return err
	}
	a.mceKill = int(v)
	if tid != p.pid {
		return nil
	}
	if _, v, err = th.call("prctl(PR_GET_MDWE)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_MDWE} }); err != nil {
		return err
	}
	a.mdwe = v
	_, v, err = th.call("membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)", 0, unix.SYS_MEMBARRIER, func(uint64) []uint64 {
		return []uint64{kabi.MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0}
	})
	if err != nil {
		// Linux before 6.3 cannot tell which registrations a process
		// holds, nor whether it holds any.
		return fmt.Errorf("%w (reading membarrier registrations needs Linux 6.3)", err)
	}
	a.membarrier = uint32(v)
	return nil
}

// timerSlack returns the thread's timer slack and its default, the value
// a reset to 0 gives back, which nothing shows: the thread's slack is
// reset, and the slack it then has read and set back. A real-time thread
// has no slack (0), and a reset does nothing to it; its default comes back
// when it leaves the real-time class, so it is moved to SCHED_OTHER for
// the instant of the read and back, which needs CAP_SYS_NICE.
//
// With CAP_SYS_NICE all of it goes through /proc/TID/timerslack_ns, at no
// ptrace stop; without it (a non-root dump) the thread itself is asked,
// with PR_GET_TIMERSLACK and PR_SET_TIMERSLACK, four injected calls.
func (p *process) timerSlack(th *thread) (slack, def uint64, err error) {
	tid := th.t.Tid
	get := func() (uint64, error) { return procfs.TimerSlack(tid) }
	set := func(v uint64) error { return procfs.SetTimerSlack(tid, v) }
	slack, err = get()
	if errors.Is(err, fs.ErrPermission) {
		get = func() (uint64, error) {
			_, v, err := th.call("prctl(PR_GET_TIMERSLACK)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_GET_TIMERSLACK} })
			return v, err
		}
		set = func(v uint64) error {
			_, _, err := th.call("prctl(PR_SET_TIMERSLACK)", 0, unix.SYS_PRCTL, func(uint64) []uint64 { return []uint64{unix.PR_SET_TIMERSLACK, v} })
			return err
		}
		slack, err = get()
	}
	if err != nil {
		return 0, 0, err
	}
	sa := th.attrs.sched
	if rt := sa.Policy == unix.SCHED_FIFO || sa.Policy == unix.SCHED_RR; rt {
		other := unix.SchedAttr{Policy: unix.SCHED_NORMAL, Flags: sa.Flags & unix.SCHED_FLAG_RESET_ON_FORK, Nice: sa.Nice}
		if err := unix.SchedSetAttr(tid, &other, 0); err != nil {
			return 0, 0, fmt.Errorf("thread %d runs %s: its default timer slack shows only outside the real-time class, and moving it there for an instant failed: %w",
				tid, policyName(sa.Policy), hintNice(err))
		}
		def, err = get()
		back := *sa
		if berr := unix.SchedSetAttr(tid, &back, 0); berr != nil {
			return 0, 0, fmt.Errorf("thread %d: give back %s priority %d: %w", tid, policyName(sa.Policy), sa.Priority, berr)
		}
		return slack, def, err
	}
	if err = set(0); err != nil {
		return 0, 0, err
	}
	def, err = get()
	if serr := set(slack); serr != nil && err == nil {
		err = serr
	}
	return slack, def, err
}

func hintNice(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w (needs CAP_SYS_NICE)", err)
	}
	return err
}

func policyName(p uint32) string {
	switch p {
	case unix.SCHED_NORMAL:
		return "SCHED_OTHER"
	case unix.SCHED_FIFO:
		return "SCHED_FIFO"
	case unix.SCHED_RR:
		return "SCHED_RR"
	case unix.SCHED_BATCH:
		return "SCHED_BATCH"
	case unix.SCHED_IDLE:
		return "SCHED_IDLE"
	case unix.SCHED_DEADLINE:
		return "SCHED_DEADLINE"
	}
	return "policy " + strconv.Itoa(int(p))
}

// cpuWords is a CPU mask without its trailing zero words.
func cpuWords(set *unix.CPUSet) []uint64 {
	w := make([]uint64, len(set))
	for i := range set {
		w[i] = uint64(set[i])
	}
	for len(w) > 0 && w[len(w)-1] == 0 {
		w = w[:len(w)-1]
	}
	return w
}

// readUint32 reads a /proc file holding one decimal number; ok is false if
// the kernel has no such file (CONFIG_AUDIT off).
func readUint32(path string) (v uint32, ok bool, err error) {
	b, err := procfs.ReadFileBounded(path, 64)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, false, nil
		}
		return 0, false, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q: %w", path, b, err)
	}
	return uint32(n), true, nil
}

// schedPolicy is CRIU's sched_policy: what sched_getscheduler returns, the
// policy with SCHED_RESET_ON_FORK.
func (a *attrs) schedPolicy() uint32 {
	v := a.sched.Policy
	if a.sched.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0 {
		v |= unix.SCHED_RESET_ON_FORK
	}
	return v
}

// metaAttrs fills what cryo-meta.json records of th's attributes.
func (a *attrs) meta(mt *meta.Task, baseSlice uint64) {
	mt.SessionID = a.sessionid
	if a.sched.Policy == unix.SCHED_NORMAL || a.sched.Policy == unix.SCHED_BATCH || a.sched.Policy == unix.SCHED_IDLE {
		if a.sched.Runtime != baseSlice {
			mt.Sched = &meta.Sched{Runtime: a.sched.Runtime}
		}
	}
	mt.Affinity = a.affinity
	mt.Ioprio = a.ioprio
	mt.TimerSlack, mt.DefaultTimerSlack = &a.slack, &a.defSlack
	switch a.mceKill {
	case unix.PR_MCE_KILL_EARLY:
		mt.MCEKill = "early"
	case unix.PR_MCE_KILL_LATE:
		mt.MCEKill = "late"
	}
	mt.IOFlusher = a.ioFlusher
	mt.MDWE = a.mdwe
}

// baseSlice is the time slice of a fair thread that asked for none
// (sysctl sched_base_slice, which only debugfs shows): cryo's own.
func baseSlice() (uint64, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return 0, fmt.Errorf("sched_getattr of cryo: %w", err)
	}
	return a.Runtime, nil
}

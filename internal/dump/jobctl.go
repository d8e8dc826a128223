package dump

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
)

// Job control: a process in a group stop, and the reports its parent can
// still collect with waitpid.
//
// A group stop is the process's (signal_struct): SIGNAL_STOP_STOPPED while
// every thread stands in it, and group_exit_code, the stop signal, until
// the parent collects the stop with waitpid(WUNTRACED), which zeroes it.
// A stopped and then continued process keeps SIGNAL_STOP_CONTINUED until
// the parent collects that with WCONTINUED. Neither is shown in /proc; the
// parent itself can ask without collecting anything: waitid with WNOWAIT.
// So each process of the tree is asked, by injection, about each of its
// children in the tree. The root's parent is not in the tree: after
// restore the root has another parent, which finds its stop, if any, not
// collected.

// waitReport is what waitid(WNOWAIT) tells a parent of one child: the
// si_code (CLD_STOPPED, CLD_CONTINUED; 0: nothing to collect) and
// si_status.
type waitReport struct {
	code, status int
}

const (
	cldStopped   = 5 // CLD_STOPPED
	cldContinued = 6 // CLD_CONTINUED
	waitNowait   = 0x01000000
	waitAll      = 0x40000000 // __WALL: children whatever their exit signal
)

// collectReports asks the leader, for each child of p in the tree, what a
// wait for a stop or continue would return, collecting nothing.
func (p *process) collectReports() error {
	if len(p.kids) == 0 {
		return nil
	}
	l := p.threads[0]
	p.reports = map[int]waitReport{}
	for _, k := range p.kids {
		b, _, err := l.call("waitid(WNOWAIT)", kabi.SiginfoSize, unix.SYS_WAITID, func(s uint64) []uint64 {
			return []uint64{unix.P_PID, uint64(k.pid), s, unix.WSTOPPED | unix.WCONTINUED | unix.WNOHANG | waitNowait | waitAll, 0}
		})
		if err != nil {
			return fmt.Errorf("process %d: wait report of child %d: %w", p.pid, k.pid, err)
		}
		r := waitReport{code: int(int32(binary.LittleEndian.Uint32(b[8:]))), status: int(int32(binary.LittleEndian.Uint32(b[24:])))}
		if pid := int(int32(binary.LittleEndian.Uint32(b[16:]))); pid != k.pid {
			r = waitReport{} // nothing to collect
		}
		p.reports[k.pid] = r
	}
	return nil
}

// report names the wait report p's parent had not collected, as restore
// reads it (meta.Task.Report).
func (p *process) report() (string, error) {
	if p.parent == nil {
		return "", nil
	}
	r := p.parent.reports[p.pid]
	switch r.code {
	case 0:
		return "", nil
	case cldStopped:
		if p.stopSig == 0 || r.status != int(p.stopSig) {
			return "", fmt.Errorf("process %d: its parent %d would collect a stop by signal %d, but it is %s", p.pid, p.parent.pid, r.status, stopName(p.threads[0].t.Task))
		}
		return "stopped", nil
	case cldContinued:
		if p.stopSig != 0 {
			return "", fmt.Errorf("process %d is stopped, but its parent %d would collect a continue", p.pid, p.parent.pid)
		}
		return "continued", nil
	}
	return "", fmt.Errorf("process %d: its parent %d would collect a report with si_code %d: %w", p.pid, p.parent.pid, r.code, ErrNotSupported)
}

// metaTask is what cryo-meta.json records of thread th of p (nil: nothing
// beyond CRIU's core entry).
func (p *process) metaTask(th *thread, baseSlice uint64) *meta.Task {
	mt := &meta.Task{}
	if th.t.Tid == p.pid {
		mt.Report = p.reportName
		if sig := p.stat.ExitSignal; sig != int(unix.SIGCHLD) {
			mt.ExitSignal = &sig
		}
		if tid := p.parentTid; p.parent != nil && tid != p.parent.pid {
			mt.ParentTid = &tid
		}
		mt.Mlockall = p.mlockall
	}
	th.attrs.meta(mt, baseSlice)
	return mt
}

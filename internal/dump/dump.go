package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/sysvipc"
)

// ErrNotSupported marks state cryo cannot checkpoint yet. The dump stops
// before writing anything and the process goes on untouched.
var ErrNotSupported = errs.ErrNotSupported

// Options says what to dump and how.
type Options struct {
	// Pid is the process to dump (a thread-group leader).
	Pid int
	// Dir is the image directory; created if missing.
	Dir string
	// LeaveRunning lets the process go on after a successful dump. The zero
	// value kills it, as criu does.
	LeaveRunning bool
	// ShellJob allows stdio on a terminal; restore re-attaches it to the
	// terminal of cryo restore. Without it a terminal fd fails the dump.
	ShellJob bool
	// FileLocks dumps the tree's file locks (criu's --file-locks). Without
	// it a process holding any file lock fails the dump, naming the lock.
	FileLocks bool
	// GhostLimit is the largest deleted file whose contents go into the
	// image, in bytes (criu's --ghost-limit); 0: no limit.
	GhostLimit int64
	// Keeper is the cryo binary to run as the keeper of the tree's ends of
	// pipes whose other end is held outside it (package keeper), when the
	// dump kills the tree; "" keeps none, and the outside process sees
	// those ends close with the tree, as with CRIU.
	Keeper string
	// TCPEstablished dumps established TCP connections by TCP repair
	// (criu's --tcp-established). The zero value refuses them, by name.
	TCPEstablished bool
	// TCPClose dumps established connections without their state (criu's
	// dump --tcp-close): the restore brings them back aborted, and needs
	// --tcp-close too. It wins over TCPEstablished, as in CRIU.
	TCPClose bool
	// NetworkLock is how the connections are kept from changing while
	// they are read and until the restore (criu's --network-lock); the
	// zero value is nftables.
	NetworkLock netlock.Method
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called as pages are written (done, total).
	Progress func(done, total uint64)
	// Context, if set, aborts the dump when done: the process is released
	// as it was and no image is left. Checked between steps and between
	// batches of pages, never in the middle of an injected syscall.
	Context context.Context
	// Notify, if set, is called at the points of a dump that CRIU's action
	// scripts and RPC notifications know, with the root's pid: "pre-dump"
	// (nothing is touched yet; an error stops the dump) and "post-dump"
	// (the image is complete, the tree still frozen; an error leaves the
	// image and lets the tree go on instead of killing it).
	Notify func(event string, pid int) error
}

// ErrAborted reports a dump stopped through Options.Context.
var ErrAborted = errors.New("dump aborted")

func (p *process) aborted() error {
	if p.opts.Context == nil {
		return nil
	}
	if err := p.opts.Context.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrAborted, context.Cause(p.opts.Context))
	}
	return nil
}

// Stats are the figures of a dump, also written to stats-dump (CRIU's name, no .img).
type Stats struct {
	Freezing     time.Duration // from first seize until every thread stood still
	Frozen       time.Duration // how long the process was stopped
	MemDump      time.Duration
	PagesScanned uint64
	PagesWritten uint64
	VMAs         int
	Threads      int
	// TCPConns are the established connections dumped, and NetworkLock
	// how long the network lock had held them when the dump ended (it
	// goes on holding them for the restore when the tree is killed).
	// stats-dump has no field for either: the log shows them.
	TCPConns    int
	NetworkLock time.Duration
}

// process is the dump's working state for one process.
type process struct {
	pid     int
	log     *slog.Logger
	opts    Options
	status  *procfs.Status
	stat    *procfs.Stat
	threads []*thread       // leader first
	files   *files.Dumper   // shared by the whole tree
	sysv    *sysvipc.Dumper // shared by the whole tree
	ns      *treeNS         // shared by the whole tree
	fds     []*fdinfo.FdinfoEntry
	closers []io.Closer
	// index is the process's place in the tree (0 for the root): its
	// kernel objects' ids and its pages file are numbered from it.
	index int
	// parent is the process's parent in the tree (nil for the root); its
	// areas and open pagemap let the dump find pages still shared
	// copy-on-write between the two.
	parent    *process
	areas     []*area
	areaAt    map[uint64]*area // areas by start, built when a child asks
	pagemap   *os.File
	inherited [][2]uint64
	// lockOnFault are the starts of the VMAs locked on fault, and
	// mlockall the mm's MCL_FUTURE|MCL_ONFAULT (memlock.go).
	lockOnFault []uint64
	mlockall    int
	// sealed are the starts of the VMAs sealed with mseal.
	sealed []uint64
	// tramp is cryo's return trampoline in the process while collect
	// injects (mapTrampoline).
	tramp *inject.Trampoline
	// smaps is what collect read of /proc/PID/smaps, kept for the state
	// record (writeState): the kernel's smaps costs a page-table walk.
	smaps []procfs.Mapping
	// parentTid is the thread of its parent whose child it is.
	parentTid int
	// suspended: its threads were seized with PTRACE_O_SUSPEND_SECCOMP.
	suspended bool
	// stopSig is the signal of the group stop the process was in when
	// seized (0: it was running).
	stopSig unix.Signal
	// kids are the process's children in the tree (not its zombies), and
	// reports what each one's wait would tell this process now (waitid
	// with WNOWAIT, which collects nothing): a stop or a continue not yet
	// collected, by pid.
	// sharedPending is the process's queue of pending signals, read
	// before anything was injected.
	sharedPending []kabi.Siginfo
	kids          []*process
	reports       map[int]waitReport
	reportName    string // p's own, as its parent sees it (meta.Task.Report)
}

// check refuses what cannot be dumped before anything is touched.
func (p *process) check() error {
	if p.pid <= 0 {
		return fmt.Errorf("bad pid %d", p.pid)
	}
	if p.pid == os.Getpid() {
		return fmt.Errorf("pid %d is cryo itself", p.pid)
	}
	st, err := procfs.StatusPid(p.pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no process with pid %d", p.pid)
		}
		return fmt.Errorf("process %d: %w", p.pid, err)
	}
	if st.Tgid != p.pid {
		return fmt.Errorf("pid %d is a thread of process %d: dump the process", p.pid, st.Tgid)
	}
	if st.Kthread {
		return fmt.Errorf("pid %d (%s) is a kernel thread", p.pid, st.Name)
	}
	if st.State == 'Z' || st.State == 'X' {
		return fmt.Errorf("pid %d (%s) is a zombie", p.pid, st.Name)
	}
	if st.TracerPid != 0 {
		return traced(p.pid, p.pid, st.Name, st.TracerPid)
	}
	p.status = st
	if err := checkPrivileges(); err != nil {
		return err
	}
	return checkChildrenShare(p.pid)
}

// freeze seizes every thread, re-reading the thread list until a pass finds
// none new: a thread may create another while it is being seized.
func (p *process) freeze() (err error) {
	defer func() {
		if err != nil {
			// The threads seized so far go back as they were: the tree
			// releases only the processes frozen whole.
			err = errors.Join(err, p.release())
		}
	}()
	seen := map[int]bool{}
	opts := kabi.PTRACE_O_TRACESYSGOOD | ptraceSuspendSeccomp
	for pass := 0; ; pass++ {
		if pass > 1000 {
			return fmt.Errorf("process %d keeps creating threads faster than they can be stopped", p.pid)
		}
		tids, err := listTasks(p.pid)
		if err != nil {
			return err
		}
		added := 0
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			t, err := ptrace.Seize(tid, opts)
			if err != nil && opts&ptraceSuspendSeccomp != 0 && errors.Is(err, unix.EPERM) {
				// Suspending seccomp needs CAP_SYS_ADMIN; do without.
				opts &^= ptraceSuspendSeccomp
				t, err = ptrace.Seize(tid, opts)
			}
			if errors.Is(err, ptrace.ErrGone) {
				continue // the thread exited on its own
			}
			if err != nil && errors.Is(err, unix.EPERM) {
				// A task has one tracer: a thread traced by another
				// process cannot be seized (and a leader's tracer is
				// refused in check, before anything).
				if st, serr := procfs.TaskStatusPid(p.pid, tid); serr == nil && st.TracerPid != 0 {
					return traced(p.pid, tid, st.Name, st.TracerPid)
				}
			}
			if err != nil {
				return permissionHint(p.pid, err)
			}
			t.QuietSignals = true
			th := &thread{t: inject.Borrowed(t, p.pid)}
			if tid == p.pid {
				p.threads = append([]*thread{th}, p.threads...)
			} else {
				p.threads = append(p.threads, th)
			}
			added++
		}
		if added == 0 {
			break
		}
	}
	if len(p.threads) == 0 || p.threads[0].t.Tid != p.pid {
		return fmt.Errorf("process %d: %w", p.pid, ptrace.ErrGone)
	}
	p.suspended = opts&ptraceSuspendSeccomp != 0
	return p.checkStopped()
}

// checkStopped records whether the process is in a group stop (SIGSTOP,
// SIGTSTP, SIGTTIN, SIGTTOU), and with which signal. A group stop is the
// whole process's: the kernel stops every thread before it calls the stop
// complete, and a seized thread reports it as a PTRACE_EVENT_STOP with the
// stop signal. Threads that disagree mean the process was being stopped or
// continued while cryo froze it: the image would hold neither state.
func (p *process) checkStopped() error {
	lead := p.threads[0].t
	for _, th := range p.threads[1:] {
		if th.t.GroupStopped != lead.GroupStopped || th.t.StopSignal != lead.StopSignal {
			return fmt.Errorf("process %d was being stopped or continued while it was frozen (thread %d: %s, thread %d: %s): try again",
				p.pid, lead.Tid, stopName(lead.Task), th.t.Tid, stopName(th.t.Task))
		}
	}
	if lead.GroupStopped {
		switch lead.StopSignal {
		case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		default:
			return fmt.Errorf("process %d is in a group stop by signal %d, not a stop signal: %w", p.pid, lead.StopSignal, ErrNotSupported)
		}
		p.stopSig = lead.StopSignal
	}
	return nil
}

func stopName(t *ptrace.Task) string {
	if !t.GroupStopped {
		return "running"
	}
	return "stopped by " + unix.SignalName(t.StopSignal)
}

// traced refuses thread tid of process pid, which tracer traces: cryo
// cannot seize it (a task has one tracer), and a restore could not give
// the relationship back.
func traced(pid, tid int, name string, tracer int) error {
	// TracerPid is the tracing thread's tid: name its process.
	who := fmt.Sprintf("pid %d", tracer)
	if st, err := procfs.StatusPid(tracer); err == nil {
		who = fmt.Sprintf("pid %d (%s)", st.Tgid, st.Name)
		if st.Tgid != tracer {
			who = fmt.Sprintf("pid %d (%s, its thread %d)", st.Tgid, st.Name, tracer)
		}
	}
	what := fmt.Sprintf("process %d (%s)", pid, name)
	if tid != pid {
		what = fmt.Sprintf("thread %d (%s) of process %d", tid, name, pid)
	}
	return fmt.Errorf("%s is traced by %s (a debugger or tracer): a task has only one tracer, and restore cannot give a ptrace relationship back; detach it first: %w",
		what, who, ErrNotSupported)
}

// ptraceSuspendSeccomp keeps the target's seccomp filters from judging
// cryo's injected syscalls.
const ptraceSuspendSeccomp = 1 << 21

func permissionHint(pid int, err error) error { return ptraceDenied(pid, err) }

func listTasks(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("process %d: %w", pid, ptrace.ErrGone)
		}
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids, nil
}

// requeueCaught queues again the signals the kernel dequeued for the
// process's threads while cryo stopped them, every SIGSTOP last.
func (p *process) requeueCaught() error {
	var errs []error
	for _, stop := range []bool{false, true} {
		for _, th := range p.threads {
			if err := th.requeueCaught(p.pid, p.sharedPending, stop); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// release undoes everything the dump did to the process and lets it run.
func (p *process) release() error {
	errs := []error{p.requeueCaught()}
	var stopped []int
	for _, th := range p.threads {
		if th.t.GroupStopped {
			stopped = append(stopped, th.t.Tid)
		}
		if err := th.release(); err != nil {
			errs = append(errs, err)
		}
	}
	p.threads = nil
	p.awaitStopped(stopped)
	return errors.Join(errs...)
}

// awaitStopped waits, a second at most, until the threads tids, which were
// in a group stop when seized, are stopped again: the kernel wakes a
// thread that its tracer lets go, and it stops again at once, before any
// code of its own (__ptrace_unlink). A dump that leaves the tree running
// returns with the tree as it found it, not on its way there.
func (p *process) awaitStopped(tids []int) {
	deadline := time.Now().Add(time.Second)
	for _, tid := range tids {
		if st, ok := procfs.WaitStopped(p.pid, tid, deadline); !ok {
			p.log.Warn("thread not back in its group stop", "pid", p.pid, "tid", tid, "state", string(st))
			return
		}
	}
}

// kill ends the dumped process and reaps the ptrace notifications of its
// threads, which stay zombies until their tracer has seen them exit.
func (p *process) kill() error {
	// SIGKILL is final once sent, even to a stopped tracee. The kernel then
	// tears the process down, which for a large one takes a tenth of a
	// second per GiB of memory, and reports its exit to its parent once
	// cryo, its tracer, lets go of it (on exit, if not before). Waiting for
	// that would only make the dump slower; criu does not wait either.
	// Restore, if run right after, waits a moment for a pid still held by
	// an exiting process (see restore.pidFree).
	if err := unix.Kill(p.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d after dump: %w", p.pid, err)
	}
	p.threads = nil
	return nil
}

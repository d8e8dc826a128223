package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/keeper"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/procstate"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/sysvipc"
)

// treeRestorer restores a process tree: it creates every process from its
// parent (so pids, parents, sessions and groups come out right), then has
// each restorer rebuild its process, and lets them all go together.
type treeRestorer struct {
	opts Options
	log  *slog.Logger
	l    *loaded
	// claim holds the pipes the dump's keeper kept (package keeper).
	claim *keeper.Claim
	rs    []*restorer // in pstree order, parents first
	byPid map[uint32]*restorer
	pages uint64

	// sysv makes the System V segments, semaphore sets and message
	// queues again (package sysvipc).
	sysv *sysvipc.Restorer
	// files restores every fd of the tree (package files).
	files *files.Restorer
	// Shared anonymous memory, held by the first process that made it
	// ("owner"): the others map it through the owner's /proc/PID/map_files.
	shm    map[uint64]shmOwner
	shmLen map[uint64]uint64 // shmid → size the object needs, over the tree
	// helpers are processes made only to recreate a session or group whose
	// leader is gone; each is reaped by the process it was forked from.
	helpers []helper
	// born makes the root; nil is the stub birth.
	born birthFunc
	// forking is the time the root and fork stages took (stats-restore).
	forking time.Duration
	// lock holds the restored TCP connections until the tree runs.
	lock *netlock.Lock
	// ns are the namespaces the tree is born in (ns.go); nil: cryo's.
	ns *nsPlan
}

type shmOwner struct {
	pid        int
	start, end uint64
}

type helper struct {
	pid    int
	parent *restorer
}

// Run restores the image in opts.Dir. On failure, whatever was built is
// killed and nothing runs.
func Run(opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// Locks left by dumps that died before completing (package netlock).
	netlock.SweepLogged(opts.Log)
	t0 := time.Now()
	l, err := load(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Log.Debug("image loaded", "processes", len(l.procs), "took", time.Since(t0))
	if l.dir.Foreign() {
		opts.Log.Info("image written by another tool than cryo (no cryo-checksums, no cryo-meta.json): checksummed as found; derived: machine from the cores, vdso by its size, formerly writable read-only VMAs by their pages",
			"accounted_read_only", l.meta.AccountedReadOnly)
		opts.Log.Warn("an image cryo did not write records no audit session, affinity, ioprio, timer slack, uclamp, MCE policy or pending wait reports: the threads get what a thread nothing set has, as with CRIU")
	}
	t := &treeRestorer{opts: opts, log: opts.Log, l: l, byPid: map[uint32]*restorer{},
		shm: map[uint64]shmOwner{}, shmLen: map[uint64]uint64{}}
	for _, pl := range l.procs {
		r := &restorer{opts: opts, log: opts.Log, l: pl, t: t}
		t.rs = append(t.rs, r)
		t.byPid[pl.tree.GetPid()] = r
		for _, e := range pl.mm.GetVmas() {
			if has(e, kabi.VMA_ANON_SHARED) {
				t.shmLen[e.GetShmid()] = max(t.shmLen[e.GetShmid()], e.GetPgoff()+e.GetEnd()-e.GetStart())
			}
		}
	}
	root := &restorer{opts: opts, log: opts.Log, l: l, t: t}
	if err := root.preflight(); err != nil {
		return nil, err
	}
	if t.ns, err = loadNamespaces(l.set); err != nil {
		return nil, err
	}
	if t.ns != nil && t.ns.ipc != nil {
		// A new namespace: nothing in it can be taken.
		if t.sysv, err = sysvipc.LoadNamespace(l.dir, t.ns.ipcID, l.meta.SemPids, l.meta.MsgPids); err != nil {
			return nil, err
		}
		t.ns.sysv = t.sysv
	} else {
		if t.sysv, err = sysvipc.Load(l.dir, l.meta.SemPids, l.meta.MsgPids); err != nil {
			return nil, err
		}
		if err := t.sysv.Check(); err != nil {
			return nil, err
		}
	}
	defer t.sysv.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The stub that forks the root is killed right after; as a child
	// subreaper cryo inherits the root, so it can wait for it and, on
	// failure, reap it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	res := &Result{Pid: int(l.tree.GetPid())}
	if err := t.build(); err != nil {
		t.kill()
		t.files.Cleanup()
		t.sysv.Cleanup()
		t.endClaim(false)
		t.unlock()
		return nil, err
	}
	t.endClaim(true)
	t.files.Cleanup()
	t.unlock()
	if m := l.set.Meta; m != nil && m.NetworkLock != "" {
		// The dump's lock, which held the connections while no socket had
		// them: the restored ones have them now.
		if err := netlock.Remove(m.NetworkLock); err != nil {
			t.log.Warn("the dump's network lock could not be removed", "lock", m.NetworkLock, "err", err)
		} else {
			t.log.Info("the dump's network lock removed", "lock", m.NetworkLock)
		}
	}
	res.Pages = t.pages
	res.Took = time.Since(t0)
	t.log.Info("restored", "pid", res.Pid, "processes", len(t.rs), "took", res.Took)
	t.writeStats(res)
	// The tree runs: a failing post-resume script can only be reported.
	if err := t.notify("post-resume"); err != nil {
		t.log.Warn("post-resume action failed", "err", err)
		res.NotifyErr = err
	}
	if opts.Detached {
		return res, nil
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(res.Pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("wait for %d: %w", res.Pid, err)
		}
		break
	}
	switch {
	case ws.Exited():
		res.Status = ws.ExitStatus()
	case ws.Signaled():
		res.Status = 128 + int(ws.Signal())
	}
	return res, nil
}

// kill ends every process built so far, children first, by pid. A zombie
// whose parent died meanwhile was re-parented, to cryo (a subreaper) or to
// a subreaper of the tree that is killed here too, and is reaped last.
func (t *treeRestorer) kill() {
	for i := len(t.rs) - 1; i >= 0; i-- {
		if c := t.rs[i].c; c != nil {
			c.kill()
		}
	}
	for _, r := range t.rs {
		if r.l.zombie && r.c != nil {
			if _, err := ptrace.Reap(r.c.pid); err != nil {
				t.log.Warn("reap zombie", "pid", r.c.pid, "err", err)
			}
		}
	}
}

// A stage is one step of the restore over the whole tree. The stages run
// in this order; a failure in any kills everything built so far.
type stage struct {
	name string
	run  func(t *treeRestorer) error
}

var stages = []stage{
	// files: deleted files back on disk, the fd kinds' side data read.
	{"files", (*treeRestorer).prepareFiles},
	// netlock: the image's TCP connections locked (package netlock)
	// before any socket is made for them, until the tree runs.
	{"netlock", (*treeRestorer).lockTCP},
	// sysv: the System V segments the tree attached, and its semaphore
	// sets and message queues, with their ids.
	{"sysv", func(t *treeRestorer) error {
		if t.ns != nil && t.ns.ipc != nil {
			return nil // made in the tree's new namespace, at the root's birth (ns.go)
		}
		return t.sysv.Create()
	}},
	// root: the tree's root, born with its pid (t.born, see birth).
	{"root", (*treeRestorer).bornRoot},
	// fork: every other process forked from its restored parent, parents
	// first, each with its memory, so that children inherit their
	// parent's pages copy-on-write, as they had them.
	{"fork", (*treeRestorer).forkTree},
	// sysv-removed: segments that were removed (IPC_RMID) before the
	// dump are removed again, now that every process attached them.
	{"sysv-removed", func(t *treeRestorer) error { return t.sysv.Removed() }},
	// sysv-last: semaphore values and queued messages, each last
	// operation done by the process of the tree that did it (GETPID,
	// lspid, lrpid), before anything of theirs runs.
	{"sysv-last", func(t *treeRestorer) error { return t.sysv.Last(t.sysvAs) }},
	// groups: process groups, with helpers for leaders that are gone.
	{"groups", (*treeRestorer).setGroups},
	// continued: processes whose parent had a continue to collect are
	// stopped and continued, before any signal of theirs is queued
	// (jobctl.go).
	{"continued", (*treeRestorer).continueAll},
	// task: fds, fs, signals, timers, rlimits and threads of every process.
	{"task", (*treeRestorer).buildTasks},
	// creds: credentials and seccomp, which may take away what the
	// earlier stages needed.
	{"creds", (*treeRestorer).setCreds},
	// shared: what restore held for sharing closed, memfds sealed.
	{"shared", func(t *treeRestorer) error { return t.files.Finish() }},
	// zombies: the image's zombies exit with their status.
	{"zombies", (*treeRestorer).killZombies},
	// locks: file locks taken and read back, once no more fds close (a
	// close drops the POSIX locks of its process on the file).
	{"locks", func(t *treeRestorer) error { return t.files.TakeLocks() }},
	// stops: processes that were stopped are put in a group stop again,
	// and their parents collect what they had collected (jobctl.go).
	{"stops", (*treeRestorer).stopAll},
	// finish: scratch areas gone, every thread's registers, FPU state and
	// signal mask set. Nothing has run yet.
	{"finish", (*treeRestorer).finishAll},
}

// A birth makes the root of the tree, with pid, from outside: a stub that
// clone3s it with set_tid today (birth in child.go); a process in new
// namespaces or a sibling of the RPC's caller are other births.
type birthFunc func(b birthArgs) (*child, error)

// birthArgs say what the root is to be born with.
type birthArgs struct {
	pid  int
	base uint64 // where the stub and its scratch area go (chooseBase)
	log  *slog.Logger
	// slack is the root's default timer slack: its creator's slack when
	// it is cloned (0: whatever the creator has).
	slack uint64
	// exitSignal is what the root's parent is to get when it exits.
	exitSignal unix.Signal
	// files are the root's fds 3, 4, ... (files.Restorer.InheritFiles).
	files []*os.File
	// ns are the namespaces it is born in (nil: its creator's).
	ns *nsPlan
}

// build runs every stage, telling Options.Notify the points CRIU's action
// scripts know, then lets the whole tree go together.
func (t *treeRestorer) build() error {
	if err := t.notify("pre-restore"); err != nil {
		return err
	}
	for _, s := range stages {
		tm := time.Now()
		if err := s.run(t); err != nil {
			return err
		}
		took := time.Since(tm)
		t.log.Debug("stage done", "stage", s.name, "took", took)
		if s.name == "root" || s.name == "fork" {
			t.forking += took
		}
	}
	if t.opts.Verify {
		if err := t.verify(); err != nil {
			return err
		}
	}
	// CRIU's post-restore and pre-resume: the tree is whole and stopped. A
	// script that fails here still stops the restore.
	for _, ev := range []string{"post-restore", "pre-resume"} {
		if err := t.notify(ev); err != nil {
			return err
		}
	}
	// Whatever happened meanwhile (a script, another process, the OOM
	// killer), the tree is let go only if it is still whole.
	if err := t.checkWhole(); err != nil {
		return err
	}
	// The connections leave repair mode last, as the tree is let go.
	if err := t.files.ResumeTCP(); err != nil {
		return err
	}
	// Stopped processes first: the kernel wakes a group-stopped thread
	// its tracer lets go, and it stops again before any code of its own.
	// Only once they are all stopped again does the rest of the tree run,
	// so that nothing in it can see one on its way back to its stop.
	var errs []error
	for _, stopped := range []bool{true, false} {
		for _, r := range t.rs {
			if !r.l.zombie && (r.stopSignal() != 0) == stopped {
				errs = append(errs, r.detach())
				if stopped {
					r.awaitStopped()
				}
			}
		}
	}
	return errors.Join(errs...)
}

// awaitStopped waits, a second at most, until every thread of r, let go
// in a group stop, is stopped again.
func (r *restorer) awaitStopped() {
	deadline := time.Now().Add(time.Second)
	for _, th := range r.c.threads {
		if st, ok := procfs.WaitStopped(r.c.pid, th.Tid, deadline); !ok {
			r.log.Warn("thread not back in its group stop", "pid", r.c.pid, "tid", th.Tid, "state", string(st))
			return
		}
	}
}

// checkWhole makes sure that every thread of the tree is still alive and
// cryo's, and every zombie of the image still a zombie of its parent: a
// process killed while the restore held it (SIGKILL is the one signal
// nothing blocks) would leave its part of the tree gone or re-parented.
func (t *treeRestorer) checkWhole() error {
	for _, r := range t.rs {
		if r.l.zombie {
			st, err := procfs.StatPid(r.c.pid)
			ppid := r.l.tree.GetPpid()
			if err != nil || st.State != 'Z' || uint32(st.PPid) != ppid {
				return fmt.Errorf("zombie %d is no longer a zombie of process %d (killed while restored?): %w", r.c.pid, ppid, ptrace.ErrGone)
			}
			continue
		}
		for _, th := range r.c.threads {
			si, err := kabi.Waitid(unix.P_PID, th.Tid, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT|waitAll)
			if err != nil || si.Pid() == th.Tid {
				return fmt.Errorf("process %d: thread %d died while restored (status %#x, killed?): %w", r.c.pid, th.Tid, si.Status(), ptrace.ErrGone)
			}
		}
	}
	return nil
}

// notify tells Options.Notify that the restore reached event.
func (t *treeRestorer) notify(event string) error {
	if t.opts.Notify == nil {
		return nil
	}
	if err := t.opts.Notify(event, int(t.l.tree.GetPid())); err != nil {
		return fmt.Errorf("%s: %w", event, err)
	}
	return nil
}

func (t *treeRestorer) prepareFiles() (err error) {
	o := files.RestoreOptions{ShellJob: t.opts.ShellJob, FileLocks: t.opts.FileLocks, Inherit: t.opts.Inherit, Log: t.log,
		TCPEstablished: t.opts.TCPEstablished, TCPClose: t.opts.TCPClose}
	if boot, err := procfs.BootID(); err == nil && boot == t.l.meta.BootID {
		o.SameBoot = true
		t.claimKept(&o)
	}
	t.files, err = files.NewRestorer(t.l.set, o)
	return err
}

// claimKept takes the pipes the dump's keeper holds, if it still runs: a
// keeper gone (its outside ends all closed, or another restore took them)
// leaves the pipes to be found or made again (files.RestoreOptions).
func (t *treeRestorer) claimKept(o *files.RestoreOptions) {
	name := t.l.meta.Keeper
	if name == "" || !strings.HasPrefix(name, "cryo-keeper-") || len(name) > 64 {
		return
	}
	c, err := keeper.Take(name)
	if err != nil {
		t.log.Info("the dump's keeper of pipes is gone", "keeper", name, "err", err)
		return
	}
	t.claim, o.Kept = c, c.Files
}

// endClaim tells the keeper whether the restore took its pipes for good.
func (t *treeRestorer) endClaim(ok bool) {
	if t.claim == nil {
		return
	}
	if ok {
		t.claim.Done()
		for _, f := range t.claim.Files {
			f.Close() // the tree has its own
		}
	} else {
		t.claim.Release()
	}
	t.claim = nil
}

func (t *treeRestorer) bornRoot() error {
	var spans [][2]uint64
	for _, p := range t.l.procs {
		for _, e := range p.mm.GetVmas() {
			spans = append(spans, [2]uint64{e.GetStart(), e.GetEnd()})
		}
	}
	// One base for the whole tree: children inherit their parent's stub
	// layout, scratch area included, and build themselves from it.
	base, err := chooseBase(spans)
	if err != nil {
		return err
	}
	root := t.rs[0]
	born := t.born
	inherit := t.files.InheritFiles()
	if born == nil {
		born = birth
	} else if len(inherit) > 0 {
		return fmt.Errorf("--inherit-fd: %w with this birth", errs.ErrNotSupported)
	} else if t.ns != nil {
		return fmt.Errorf("a tree in namespaces of its own (%v): %w with this birth", t.ns.kinds, errs.ErrNotSupported)
	}
	root.inherited = len(inherit)
	ba := birthArgs{pid: int(root.l.tree.GetPid()), base: base, log: t.log, files: inherit, exitSignal: t.l.exitSignal(root.l.tree.GetPid()), ns: t.ns}
	if _, def, ok := t.l.slackOf(root.l.tree.GetPid()); ok {
		ba.slack = def
	}
	if root.c, err = born(ba); err != nil {
		return err
	}
	if err := root.bornSetup(); err != nil {
		return err
	}
	if err := root.buildMemory(nil); err != nil {
		return fmt.Errorf("process %d: %w", root.c.pid, err)
	}
	if err := root.controllingTerminal(); err != nil {
		return err
	}
	return root.makeThreads(true)
}

func (t *treeRestorer) forkTree() error {
	for _, r := range t.rs[1:] {
		if err := t.fork(r); err != nil {
			return err
		}
		if r.l.zombie {
			continue
		}
		if err := r.buildMemory(t.byPid[r.l.tree.GetPpid()]); err != nil {
			return fmt.Errorf("process %d: %w", r.c.pid, err)
		}
		if err := r.controllingTerminal(); err != nil {
			return err
		}
		if err := r.makeThreads(true); err != nil {
			return fmt.Errorf("process %d: %w", r.c.pid, err)
		}
	}
	return nil
}

func (t *treeRestorer) setGroups() error {
	if err := t.groups(); err != nil {
		return err
	}
	if err := t.reapHelpers(); err != nil {
		return err
	}
	// A terminal's foreground group is one of its session's: it exists now.
	return t.files.Foreground()
}

// controllingTerminal gives a session leader its session's terminal (a pty
// of the tree, made now), once its memory is in and before it forks: the
// kernel hands a controlling terminal on only at fork.
func (r *restorer) controllingTerminal() error {
	if r.l.tree.GetSid() != r.l.tree.GetPid() {
		return nil
	}
	if err := r.t.files.ControllingTerminal(r.proc()); err != nil {
		return fmt.Errorf("process %d: controlling terminal: %w", r.c.pid, err)
	}
	return nil
}

// sysvAs runs a System V call as process pid of the tree (sysvipc.As).
func (t *treeRestorer) sysvAs(pid int, name string, nr uintptr, data []byte, at int, args ...uint64) (bool, error) {
	r := t.byPid[uint32(pid)]
	if r == nil || r.l.zombie || r.c == nil {
		return false, nil
	}
	if data != nil {
		addr, err := r.c.arg(data)
		if err != nil {
			return true, fmt.Errorf("process %d: %w", pid, err)
		}
		args[at] = addr
	}
	if _, err := r.c.call(r.c.leader, name, nr, args...); err != nil {
		return true, fmt.Errorf("process %d: %s: %w", pid, name, err)
	}
	return true, nil
}

// each runs fn for every live process of the tree (not the zombies).
func (t *treeRestorer) each(fn func(r *restorer) error) error {
	for _, r := range t.rs {
		if r.l.zombie {
			continue
		}
		if err := fn(r); err != nil {
			return fmt.Errorf("process %d: %w", r.c.pid, err)
		}
	}
	return nil
}

func (t *treeRestorer) buildTasks() error { return t.each((*restorer).buildRest) }
func (t *treeRestorer) setCreds() error   { return t.each((*restorer).restoreCreds) }
func (t *treeRestorer) finishAll() error  { return t.each((*restorer).finish) }

// killZombies runs once everything else is built: the zombies' parents
// still have their scratch area to take back the SIGCHLD (see
// consumeSIGCHLD).
func (t *treeRestorer) killZombies() error {
	for _, r := range t.rs {
		if r.l.zombie {
			if err := t.die(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// bornSetup runs right after a process exists, before it forks anything:
// its session, and whether it adopts orphans (which its descendants'
// restore may rely on).
func (r *restorer) bornSetup() error {
	if err := r.session(); err != nil {
		return err
	}
	if r.l.zombie {
		return nil
	}
	if err := r.setAudit(); err != nil {
		return err
	}
	if r.l.cores[0].GetTc().GetChildSubreaper() {
		if _, err := r.c.call(r.c.leader, "prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return err
		}
	}
	return nil
}

// fork creates process r as a child of its parent, or, if its session's
// leader is gone, as a child of a helper that re-creates that session and
// then exits, leaving r to its parent as subreaper.
func (t *treeRestorer) fork(r *restorer) error {
	te := r.l.tree
	parent := t.byPid[te.GetPpid()]
	if parent == nil || parent.c == nil {
		return fmt.Errorf("process %d: parent %d not restored", te.GetPid(), te.GetPpid())
	}
	from := parent
	sid := te.GetSid()
	if sid != te.GetPid() && sid != parent.l.tree.GetSid() {
		if !parent.l.cores[0].GetTc().GetChildSubreaper() {
			return fmt.Errorf("process %d is in session %d, whose leader is gone, and its parent %d is no subreaper: %w", te.GetPid(), sid, te.GetPpid(), ErrNotSupported)
		}
		h, err := t.helperFor(parent, int(sid), true)
		if err != nil {
			return err
		}
		from = h
	}
	// The child of a thread other than the leader is forked by that
	// thread, which the kernel then makes its parent (real_parent): the
	// one whose exit sends it its parent-death signal.
	by, slack := from.c.leader, &from.c.slack
	if ptid := t.l.metaTask(te.GetPid()).ParentTid; ptid != nil && *ptid != int(te.GetPpid()) {
		if from != parent {
			return fmt.Errorf("process %d is the child of thread %d of process %d and in a session whose leader is gone, which restore can give only as the leader's child: %w",
				te.GetPid(), *ptid, te.GetPpid(), ErrNotSupported)
		}
		if by = parent.c.thread(*ptid); by == nil {
			return fmt.Errorf("process %d is the child of thread %d of process %d, which does not exist yet (threads made in the order of shared seccomp filters): %w",
				te.GetPid(), *ptid, te.GetPpid(), ErrNotSupported)
		}
		s := parent.c.threadSlack[*ptid]
		slack = &s
		defer func() { parent.c.threadSlack[*ptid] = s }()
	}
	if _, def, ok := t.l.slackOf(te.GetPid()); ok && !r.l.zombie {
		if err := withSlack(by, slack, def); err != nil {
			return fmt.Errorf("process %d: %w", te.GetPid(), err)
		}
	}
	c, err := from.c.forkBy(by, int(te.GetPid()), t.l.exitSignal(te.GetPid()))
	if err != nil {
		return fmt.Errorf("process %d: %w", te.GetPid(), err)
	}
	r.c = c
	return r.bornSetup()
}

// helperFor returns a helper process with pid id, forked from r, that has
// made itself leader of a new session (session) or process group.
func (t *treeRestorer) helperFor(r *restorer, id int, session bool) (*restorer, error) {
	for _, h := range t.helpers {
		if h.pid == id {
			return t.byPid[uint32(id)], nil
		}
	}
	if err := pidFree(id); err != nil {
		return nil, err
	}
	c, err := r.c.fork(id, unix.SIGCHLD)
	if err != nil {
		return nil, fmt.Errorf("helper %d: %w", id, err)
	}
	if session {
		_, err = c.call(c.leader, "setsid", unix.SYS_SETSID)
	} else {
		_, err = c.call(c.leader, "setpgid", unix.SYS_SETPGID, 0, 0)
	}
	if err != nil {
		c.kill()
		return nil, err
	}
	h := &restorer{opts: t.opts, log: t.log, t: t, c: c, l: &loaded{zombie: true}}
	t.byPid[uint32(id)] = h
	t.helpers = append(t.helpers, helper{pid: id, parent: r})
	return h, nil
}

// groups puts every process in its process group: leaders first, and a
// helper standing in for each group whose leader is gone.
func (t *treeRestorer) groups() error {
	rs := append([]*restorer(nil), t.rs...)
	sort.SliceStable(rs, func(i, j int) bool {
		return rs[i].l.tree.GetPgid() == rs[i].l.tree.GetPid() && rs[j].l.tree.GetPgid() != rs[j].l.tree.GetPid()
	})
	for _, r := range rs {
		te := r.l.tree
		pgid := int(te.GetPgid())
		cur, err := unix.Getpgid(r.c.pid)
		if err != nil {
			return fmt.Errorf("process %d: %w", r.c.pid, err)
		}
		if cur == pgid || (r.c.pid == int(t.l.tree.GetPid()) && pgid != r.c.pid) {
			continue // inherited; or the root joining a group outside the tree: it stays in cryo's
		}
		if pgid != r.c.pid {
			if _, ok := t.byPid[uint32(pgid)]; !ok {
				if _, err := t.helperFor(r, pgid, false); err != nil {
					return fmt.Errorf("process %d: group %d: %w", r.c.pid, pgid, err)
				}
			}
		}
		target := uint64(pgid)
		if pgid == r.c.pid {
			target = 0
		}
		if _, err := r.c.call(r.c.leader, "setpgid", unix.SYS_SETPGID, 0, target); err != nil {
			return fmt.Errorf("process %d: join group %d: %w", r.c.pid, pgid, err)
		}
	}
	return nil
}

// reapHelpers lets each helper exit and has the process it was forked from
// reap it: it existed only for its session or group id, which live on in
// the processes that joined them.
func (t *treeRestorer) reapHelpers() error {
	for _, h := range t.helpers {
		hr := t.byPid[uint32(h.pid)]
		hr.c.leader.Syscall(unix.SYS_EXIT_GROUP, 0) // returns ErrGone: the helper is gone
		if _, err := h.parent.c.call(h.parent.c.leader, "wait4 helper", unix.SYS_WAIT4, uint64(h.pid), 0, unix.WALL, 0); err != nil {
			return fmt.Errorf("reap helper %d: %w", h.pid, err)
		}
		if err := h.parent.consumeSIGCHLD(); err != nil {
			return err
		}
		delete(t.byPid, uint32(h.pid))
	}
	t.helpers = nil
	return nil
}

// consumeSIGCHLD takes back the SIGCHLD that a helper's or a zombie's
// death queued for r, unless r had one pending in the image: the program
// must not see a child exit that is only restore's doing.
func (r *restorer) consumeSIGCHLD() error { return r.consumeSignal(unix.SIGCHLD) }

// consumeSignal is consumeSIGCHLD for a child whose exit signal is sig
// (clone's exit signal; 0: none).
func (r *restorer) consumeSignal(sig unix.Signal) error {
	if r.l.zombie || sig == 0 {
		return nil
	}
	for _, s := range r.l.cores[0].GetTc().GetSignalsS().GetSignals() {
		if len(s.GetSiginfo()) >= 4 && s.GetSiginfo()[0] == byte(sig) {
			return nil
		}
	}
	return r.takeSignal(sig)
}

// takeSIGCHLD takes back a SIGCHLD pending for r, if there is one.
func (r *restorer) takeSIGCHLD() error { return r.takeSignal(unix.SIGCHLD) }

// takeSignal takes back a pending sig of r's, if there is one.
func (r *restorer) takeSignal(sig unix.Signal) error {
	set := uint64(1) << (sig - 1)
	b := kabi.Bytes(&set)
	sp, err := r.c.arg(b)
	if err != nil {
		return err
	}
	ts := make([]byte, 16) // a zero timeout: poll
	tp, err := r.c.arg(ts)
	if err != nil {
		return err
	}
	ret, err := r.c.leader.Syscall(unix.SYS_RT_SIGTIMEDWAIT, sp, 0, tp, 8)
	if err != nil {
		return err
	}
	if e := inject.Errno(ret); e != nil && !errors.Is(e, unix.EAGAIN) {
		return fmt.Errorf("consume %s in %d: %w", unix.SignalName(sig), r.c.pid, e)
	}
	return nil
}

// die turns a zombie of the image into a zombie again: it exits with its
// dumped status and stays unreaped for its parent.
func (t *treeRestorer) die(r *restorer) error {
	tc := r.l.cores[0].GetTc()
	status := int(tc.GetExitCode())
	c := r.c
	if err := r.zombieState(); err != nil {
		return fmt.Errorf("zombie %d: %w", c.pid, err)
	}
	// A zombie keeps the mask it had when it died (/proc shows it); the
	// signal it died of was not blocked.
	mask := r.l.cores[0].GetTc().GetBlkSigset()
	if sig := status & 0x7f; sig != 0 {
		// Killed by a signal: no core file, the signal unblocked, then sent.
		unix.Prlimit(c.pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil)
		if err := kabi.SetSigmask(c.pid, mask&^(1<<(sig-1))); err != nil {
			return err
		}
		// Two syscall stops, not the int3: the signal must stay pending, to
		// be delivered when the process is let go, not seen and consumed at
		// a stop of the injection.
		c.leader.SetSyscallIP(c.leader.SyscallIP(), false)
		if _, err := c.call(c.leader, "kill", unix.SYS_KILL, uint64(c.pid), uint64(sig)); err != nil {
			return err
		}
		c.leader.Detach()
	} else {
		if err := kabi.SetSigmask(c.pid, mask); err != nil {
			return err
		}
		c.leader.Syscall(unix.SYS_EXIT_GROUP, uint64(status>>8&0xff)) // returns ErrGone
	}
	// As its tracer, cryo takes the exit report first; the zombie then
	// waits for its parent. Once detached (killed by a signal) it is not
	// cryo's to wait for, and Reap returns at once.
	if _, err := ptrace.Reap(c.pid); err != nil {
		return err
	}
	// A detached process dies once it runs to take its signal, which may
	// be later than Reap returns: the SIGCHLD it sends its parent is only
	// there to take back once it is a zombie.
	if err := waitZombie(c.pid); err != nil {
		return err
	}
	if parent := t.byPid[r.l.tree.GetPpid()]; parent != nil {
		return parent.consumeSignal(t.l.exitSignal(r.l.tree.GetPid()))
	}
	return nil
}

// zombieState gives the process that is to die as a zombie of the image
// what /proc shows of a zombie: its name and its credentials (all but the
// securebits, which no one can ask a zombie), or, for an image without
// them, none of the capabilities cryo handed on.
func (r *restorer) zombieState() error {
	c := r.c
	tc := r.l.cores[0].GetTc()
	if comm := tc.GetComm(); comm != "" {
		p, err := c.str(comm)
		if err != nil {
			return err
		}
		if _, err := c.call(c.leader, "prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, p); err != nil {
			return err
		}
	}
	// Its signal actions: ignored or caught (the handler is never run).
	mt := r.t.l.metaTask(r.l.tree.GetPid())
	b := c.batch()
	for sig := 1; sig <= 64; sig++ {
		bit := uint64(1) << (sig - 1)
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) || (mt.ZombieIgnored|mt.ZombieCaught)&bit == 0 {
			continue
		}
		act := kabi.Sigaction{Handler: sigIgn}
		if mt.ZombieCaught&bit != 0 {
			act.Handler = c.scratch
		}
		b.AddArg("rt_sigaction "+strconv.Itoa(sig), kabi.Bytes(&act), unix.SYS_RT_SIGACTION, func(p uint64) []uint64 {
			return []uint64{uint64(sig), p, 0, 8}
		})
	}
	if err := b.Run(); err != nil {
		return err
	}
	cr := r.l.cores[0].GetThreadCore().GetCreds()
	if cr == nil {
		return c.dropAll()
	}
	w, err := wantCreds(cr)
	if err != nil {
		return err
	}
	h, err := c.threadCreds(c.leader)
	if err != nil {
		return err
	}
	w.secbits = h.secbits
	if err := refuse(w, h, c.handedOn); err != nil {
		return err
	}
	return c.setCreds(c.leader, w, h)
}

// fork has the process (still in its stub state) fork a child with the
// given pid, which inherits the stub layout and scratch area and is
// attached to cryo by PTRACE_O_TRACEFORK.
func (c *child) fork(pid int, exitSignal unix.Signal) (*child, error) {
	return c.forkBy(c.leader, pid, exitSignal)
}

// forkBy is fork by thread by of the process (its parent thread).
func (c *child) forkBy(by *inject.Task, pid int, exitSignal unix.Signal) (*child, error) {
	var tid [8]byte
	binary.LittleEndian.PutUint64(tid[:], uint64(pid))
	tp, err := c.arg(tid[:])
	if err != nil {
		return nil, err
	}
	args := kabi.CloneArgs{ExitSignal: uint64(exitSignal), SetTid: tp, SetTidSize: 1}
	ap, err := c.arg(kabi.Bytes(&args))
	if err != nil {
		return nil, err
	}
	ret, err := c.call(by, "clone3", unix.SYS_CLONE3, ap, uint64(len(kabi.Bytes(&args))))
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, pidFree(pid)
		}
		return nil, fmt.Errorf("clone3 with set_tid %d: %w", pid, err)
	}
	t, err := ptrace.Attached(int(ret))
	if err != nil {
		return nil, fmt.Errorf("new process %d: %w", ret, err)
	}
	c.log.Debug("process born", "pid", ret, "parent", c.pid)
	mem := c.mem.Fork(int(ret))
	leader := inject.Built(t, mem)
	return &child{pid: int(ret), log: c.log, leader: leader, threads: []*inject.Task{leader}, mem: mem, scratch: c.scratch, handedOn: c.handedOn, slack: c.slack}, nil
}

// waitZombie waits, bounded, until pid is a zombie.
func waitZombie(pid int) error {
	for deadline := time.Now().Add(ptrace.StopTimeout); ; time.Sleep(200 * time.Microsecond) {
		st, err := procfs.StatPid(pid)
		if err != nil {
			return fmt.Errorf("zombie %d: %w", pid, err)
		}
		if st.State == 'Z' {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d did not die of its signal within %v (state %c)", pid, ptrace.StopTimeout, st.State)
		}
	}
}

// maxStateSize bounds cryo-state.json as read back.
const maxStateSize = 256 << 20

// verify compares what the kernel shows of the restored tree, whole and
// still stopped, with what it showed of the dumped one (cryo-state.json):
// a difference fails the restore, which kills the tree before anything of
// it runs.
func (t *treeRestorer) verify() error {
	dir := t.l.dir
	if !dir.Has(imageset.StateName) {
		return fmt.Errorf("--verify: the image has no %s (dumped by an older cryo, or by another tool)", imageset.StateName)
	}
	rc, err := dir.OpenRaw(imageset.StateName)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxStateSize))
	rc.Close()
	if err != nil {
		return err
	}
	want, err := procstate.Unmarshal(b)
	if err != nil {
		return &image.FormatError{File: imageset.StateName, Offset: -1, Err: fmt.Errorf("%w: %w", err, image.ErrImageCorrupt)}
	}
	got, err := procstate.Take(int(t.l.tree.GetPid()))
	if err != nil {
		return fmt.Errorf("--verify: %w", err)
	}
	diffs := procstate.Diff(want, got)
	t.log.Info("verified", "differences", len(diffs))
	if len(diffs) == 0 {
		return nil
	}
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("and %d more", len(diffs)-10))
	}
	return fmt.Errorf("%w: the restored tree is not as it was dumped: %s", ErrVerify, strings.Join(diffs, "; "))
}

// ErrVerify reports that --verify found the restored tree different from
// the dumped one.
var ErrVerify = errors.New("verify failed")

// writeStats leaves stats-restore in the image directory, as CRIU does
// (Podman's --print-stats and crit read it): the time from the root's
// birth to the last fork, the whole restore's, and the pages restored. An
// image directory cryo may not write to only costs the file.
func (t *treeRestorer) writeStats(res *Result) {
	e := &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		PagesCompared: proto.Uint64(0), PagesSkippedCow: proto.Uint64(0),
		ForkingTime: proto.Uint32(uint32(t.forking.Microseconds())), RestoreTime: proto.Uint32(uint32(res.Took.Microseconds())),
		PagesRestored: proto.Uint64(res.Pages),
	}}
	if err := imageset.WriteLoose(t.l.dir.Path(), imageset.StatsRestore, e); err != nil {
		t.log.Warn("stats-restore not written", "err", err)
	}
}

// lockTCP takes the restore's network lock on the image's established
// connections.
func (t *treeRestorer) lockTCP() error {
	conns := t.files.TCPConns()
	lock, err := netlock.Take(t.opts.NetworkLock, t.opts.Dir, conns)
	if err != nil {
		return fmt.Errorf("%d established TCP connection(s): %w", len(conns), err)
	}
	t.lock = lock
	return nil
}

// unlock releases the restore's network lock: the tree runs, or is gone.
func (t *treeRestorer) unlock() {
	if t.lock == nil {
		return
	}
	if err := t.lock.Release(); err != nil {
		t.log.Warn("network lock not released", "lock", t.lock.Name(), "err", err)
	} else if t.lock.Name() != "" {
		t.log.Info("network lock released", "lock", t.lock.Name(), "held", t.lock.Held())
	}
	t.lock = nil
}

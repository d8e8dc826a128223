package dump

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"

	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/keeper"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/procstate"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/sysvipc"
	"github.com/cryo-project/cryo/internal/xstate"
)

// tree is a dumped process tree: the process named on the command line and
// every descendant, parents before children.
type tree struct {
	opts    Options
	log     *slog.Logger
	procs   []*process
	zombies []*zombie
	files   *files.Dumper
	sysv    *sysvipc.Dumper // the System V objects the tree uses
	ns      *treeNS         // the tree's namespaces (ns.go)
	snaps   map[*process]*snapshot
	// lock holds the tree's established connections from before they
	// are read until the restore (or until the tree goes on).
	lock *netlock.Lock

	dir *image.Dir
	st  *Stats
	sc  *seccompSet // the tree's seccomp filters
	t0  time.Time   // when the freeze began
	// baseSlice is the fair class's time slice for a thread that asked
	// for none (see baseSlice).
	baseSlice uint64
	// keeper holds the tree's ends of pipes to the outside, kept, once
	// the tree is killed (keep.go).
	keeper     *keeper.Keeper
	keeperName string // the keeper's, if it keeps files for the restore
	kept       []string
}

// zombie is a child that has exited and not been reaped: restored as a
// zombie with the same exit status, for its parent to reap.
type zombie struct {
	pid, ppid, pgid, sid int
	exitCode             int // the wait status the parent will see
	index                int
	// status is what /proc/PID/status shows of it: its name, blocked
	// signals and credentials stay with a zombie until it is reaped.
	status *procfs.Status
	// exitSignal is what its parent got when it died.
	exitSignal int
	// parentTid is the thread of its parent whose child it is.
	parentTid int
}

// Run dumps opts.Pid and all its descendants. On error every process is left
// running as it was.
//
// A dump is four stages, each over the whole tree: freeze (seize every
// thread, top-down), collect (read everything from outside and by
// injection), write (the images, then commit them) and cure (let the tree
// go on with --leave-running, or kill it). A failure at any stage cures
// the tree the other way: released exactly as it was, the partial image
// removed.
func Run(opts Options) (st *Stats, err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// Locks left by dumps that died before completing (package netlock).
	netlock.SweepLogged(opts.Log)
	t := &tree{opts: opts, log: opts.Log, sysv: sysvipc.NewDumper(), files: files.NewDumper(files.DumpOptions{Root: opts.Pid, ShellJob: opts.ShellJob, FileLocks: opts.FileLocks, GhostLimit: opts.GhostLimit, Log: opts.Log,
		TCPEstablished: opts.TCPEstablished, TCPClose: opts.TCPClose, KeepOutside: opts.Keeper != "" && !opts.LeaveRunning}),
		snaps: map[*process]*snapshot{}, st: &Stats{}, sc: newSeccompSet(), ns: &treeNS{}}
	root := t.newProcess(opts.Pid)
	if err := root.check(); err != nil {
		return nil, err
	}
	if t.baseSlice, err = baseSlice(); err != nil {
		return nil, err
	}
	if t.dir, err = image.Create(opts.Dir); err != nil {
		return nil, fmt.Errorf("image directory: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			t.dir.Abort()
		}
	}()

	// ptrace ties tracees to this OS thread (see package ptrace).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if err := t.notify("pre-dump"); err != nil {
		return nil, err
	}
	t.t0 = time.Now()
	defer t.abandonKeeper() // a no-op once committed (cure)
	defer func() {
		if err != nil {
			if uerr := t.unlockTCP(); uerr != nil {
				err = errors.Join(err, uerr)
			}
			if rerr := t.release(); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		for _, p := range t.procs {
			for _, c := range p.closers {
				c.Close()
			}
		}
		t.files.Close()
	}()
	for _, s := range []struct {
		name string
		run  func() error
	}{
		{"freeze", func() error { return t.freezeTree(root) }},
		{"collect", t.collect},
		{"write", t.writeImages},
	} {
		tm := time.Now()
		if err := s.run(); err != nil {
			return nil, err
		}
		t.log.Debug("stage done", "stage", s.name, "took", time.Since(tm))
	}
	committed = true
	t.log.Info("images written", "dir", opts.Dir, "pages", t.st.PagesWritten, "frozen", t.st.Frozen)
	if err := t.notify("post-dump"); err != nil {
		// As criu does: the image stays, the tree goes on.
		return nil, fmt.Errorf("%w; the image is complete and the processes were left running", err)
	}
	return t.st, t.cure()
}

// abandonKeeper lets the keeper go when the tree runs on after all.
func (t *tree) abandonKeeper() {
	if t.keeper != nil {
		t.keeper.Abandon()
		t.keeper = nil
	}
}

// notify tells Options.Notify that the dump reached event.
func (t *tree) notify(event string) error {
	if t.opts.Notify == nil {
		return nil
	}
	if err := t.opts.Notify(event, t.opts.Pid); err != nil {
		return fmt.Errorf("%s: %w", event, err)
	}
	return nil
}

// freezeTree is the freeze stage: every process and thread of the tree
// stopped, and none sharing what restore would split.
func (t *tree) freezeTree(root *process) error {
	if err := t.freeze(root); err != nil {
		return err
	}
	t.st.Freezing = time.Since(t.t0)
	if err := t.checkShared(); err != nil {
		return err
	}
	t.log.Info("frozen", "pid", t.opts.Pid, "processes", len(t.procs), "zombies", len(t.zombies), "took", t.st.Freezing)
	return nil
}

// collect is the collect stage: each process read, then what the whole
// tree must satisfy (a pipe or socket's other end in the tree).
func (t *tree) collect() error {
	if err := t.checkNamespaces(); err != nil {
		return err
	}
	for _, p := range t.procs {
		if err := p.aborted(); err != nil {
			return err
		}
		s, err := p.collect()
		if err != nil {
			return err
		}
		for _, th := range p.threads {
			if len(th.filters) > 0 {
				th.filterIdx = t.sc.add(th.filters)
			}
		}
		t.snaps[p] = s
		t.st.Threads += len(p.threads)
		t.st.VMAs += len(s.areas)
	}
	for _, p := range t.procs {
		var err error
		if p.reportName, err = p.report(); err != nil {
			return err
		}
	}
	if err := t.sysv.Check(); err != nil {
		return err
	}
	var tasks []sysvipc.Task
	for _, p := range t.procs {
		for _, th := range p.threads {
			tasks = append(tasks, sysvipc.Task{Pid: p.pid, Tid: th.t.Tid, Syscall: int64(th.t.Regs.Orig_rax), Arg0: th.t.Regs.Rdi})
		}
	}
	zombies := make([]int, 0, len(t.zombies))
	for _, z := range t.zombies {
		zombies = append(zombies, z.pid)
	}
	if err := t.sysv.CheckSemMsg(tasks, zombies); err != nil {
		return err
	}
	if err := t.files.Check(); err != nil {
		return err
	}
	// The keeper before repair mode: it guards the connections in it.
	if err := t.startKeeper(); err != nil {
		return err
	}
	return t.repairTCP()
}

// repairTCP takes the network lock on the tree's established connections
// and reads them in repair mode (files.Dumper.RepairTCP).
func (t *tree) repairTCP() error {
	conns := t.files.TCPConns()
	lock, err := netlock.Take(t.opts.NetworkLock, t.opts.Dir, conns)
	if err != nil {
		return fmt.Errorf("%d established TCP connection(s): %w", len(conns), err)
	}
	t.lock = lock
	t.st.TCPConns = len(conns)
	if len(conns) == 0 {
		return nil
	}
	tm := time.Now()
	unpark, err := t.park()
	if err != nil {
		return err
	}
	if err := t.files.RepairTCP(); err != nil {
		// Repair off before the threads may run again.
		return errors.Join(err, t.files.EndTCP(false), unpark())
	}
	if err := unpark(); err != nil {
		return err
	}
	t.log.Info("TCP connections read in repair mode", "connections", len(conns), "lock", lock.Name(), "method", t.opts.NetworkLock, "took", time.Since(tm))
	return nil
}

// unlockTCP lets the tree's connections go on as they were (the dump
// failed, or --leave-running): repair off, then the lock released.
func (t *tree) unlockTCP() error {
	err := t.files.EndTCP(false)
	if t.lock != nil {
		err = errors.Join(err, t.lock.Release())
		t.st.NetworkLock = t.lock.Held()
		t.log.Info("network lock released", "lock", t.lock.Name(), "held", t.st.NetworkLock)
		t.lock = nil
	}
	return err
}

// writeImages is the write stage: every image, the stats, then the commit
// that makes the directory a complete image.
func (t *tree) writeImages() error {
	tm := time.Now()
	if err := t.write(t.dir, t.sc.entry, t.st); err != nil {
		return err
	}
	// From here on the tree is as its programs see it: what the post-dump
	// point, the state record and --leave-running find is what was there.
	if err := t.requeueCaught(); err != nil {
		return err
	}
	ts := time.Now()
	if err := t.writeState(); err != nil {
		return err
	}
	t.log.Debug("state recorded", "took", time.Since(ts))
	t.st.MemDump = time.Since(tm)
	t.st.Frozen = time.Since(t.t0)
	if err := writeStats(t.dir, t.st); err != nil {
		return err
	}
	if err := t.procs[0].aborted(); err != nil {
		return err
	}
	if err := t.dir.Commit(); err != nil {
		return fmt.Errorf("commit images: %w", err)
	}
	return nil
}

// cure is the last stage, once the image is complete: the tree goes on
// (--leave-running) or is killed.
func (t *tree) cure() error {
	if t.opts.LeaveRunning {
		if err := t.unlockTCP(); err != nil {
			return errors.Join(fmt.Errorf("images are complete, but the TCP connections could not be let go: %w", err), t.release())
		}
		if t.keeper != nil {
			t.keeper.Release()
			t.keeper = nil
		}
		if err := t.release(); err != nil {
			return fmt.Errorf("images are complete, but resuming the processes failed: %w", err)
		}
		return nil
	}
	// The lock now waits for the restore, and the connections go back to
	// repair mode (SilenceTCP): their close, when the tree dies, sends
	// nothing.
	if t.lock != nil {
		if err := t.lock.Keep(); err != nil {
			return errors.Join(fmt.Errorf("images are complete, but the network lock could not be kept for the restore, so the processes were left running: %w", err), t.unlockTCP(), t.release())
		}
		if t.st.TCPConns > 0 {
			t.st.NetworkLock = t.lock.Held()
			t.log.Info("network lock kept for the restore", "lock", t.lock.Name(), "held", t.st.NetworkLock)
		}
	}
	// Parked (park.go) from repair mode on to the kill: were cryo to
	// die in between, the keeper takes repair off before they run.
	unpark, err := t.park()
	if err != nil {
		return errors.Join(fmt.Errorf("images are complete, but the processes could not be held for the kill, so they were left running: %w", err), t.unlockTCP(), t.release())
	}
	if err := t.files.SilenceTCP(); err != nil {
		t.log.Warn("a TCP connection of the tree may send its FIN as it is killed (the network lock drops it)", "err", err)
	}
	if err := t.kill(); err != nil {
		return errors.Join(err, unpark())
	}
	if t.keeper != nil {
		if err := t.keeper.Commit(); err != nil {
			t.log.Warn("the keeper of pipes to the outside is gone", "err", err)
		}
		t.keeper = nil
	}
	// The tree's segments go with it, as its IPC namespace would: a
	// segment outlives its processes, and its key and id must be free for
	// the restore.
	return t.sysv.Remove()
}

func (t *tree) newProcess(pid int) *process {
	return &process{pid: pid, ns: t.ns, log: t.log, opts: t.opts, files: t.files, sysv: t.sysv, index: len(t.procs) + len(t.zombies)}
}

// freeze seizes the root, then its children, then theirs: a stopped
// process cannot fork, so once a process is seized its list of children is
// final, and every child forked before is found.
func (t *tree) freeze(root *process) error {
	if err := root.freeze(); err != nil {
		return err
	}
	t.procs = append(t.procs, root)
	for i := 0; i < len(t.procs); i++ {
		p := t.procs[i]
		kids, err := children(p)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := t.add(k.pid, p.pid, k.tid); err != nil {
				return err
			}
		}
	}
	return nil
}

// add seizes one child, or records it as a zombie.
func (t *tree) add(pid, ppid, ptid int) error {
	st, err := procfs.StatPid(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // reaped since: no longer in the tree
		}
		return err
	}
	if st.State == 'Z' {
		status, err := procfs.StatusPid(pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // reaped since
			}
			return err
		}
		t.zombies = append(t.zombies, &zombie{pid: pid, ppid: ppid, pgid: st.Pgrp, sid: st.Session, exitCode: st.ExitCode,
			index: len(t.procs) + len(t.zombies), status: status, exitSignal: st.ExitSignal, parentTid: ptid})
		return nil
	}
	p := t.newProcess(pid)
	p.parentTid = ptid
	for _, q := range t.procs {
		if q.pid == ppid {
			p.parent = q
		}
	}
	if err := p.check(); err != nil {
		if exited(pid) {
			// Exited since it was listed (a shell's `sleep`): now a
			// zombie, or gone.
			return t.add(pid, ppid, ptid)
		}
		return fmt.Errorf("child %d of %d: %w", pid, ppid, err)
	}
	if err := p.freeze(); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, ptrace.ErrGone) || exited(pid) {
			// Exited while being seized (PTRACE_SEIZE of an exiting
			// task fails with EPERM): now a zombie, or gone.
			return t.add(pid, ppid, ptid)
		}
		return err
	}
	t.procs = append(t.procs, p)
	if p.parent != nil {
		p.parent.kids = append(p.parent.kids, p)
	}
	return nil
}

// exited says whether pid is a zombie now, or gone.
func exited(pid int) bool {
	st, err := procfs.StatPid(pid)
	return err != nil || st.State == 'Z' || st.State == 'X'
}

// kid is a child of a process and the thread of it that is the child's
// parent.
type kid struct{ pid, tid int }

// children lists the children of every thread of p (a child belongs to
// the thread that forked it: when that thread exits, the child gets its
// parent-death signal and a new parent thread).
func children(p *process) ([]kid, error) {
	var out []kid
	for _, th := range p.threads {
		cs, err := procfs.TaskChildrenPid(p.pid, th.t.Tid)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("children of %d: %w (needs CONFIG_PROC_CHILDREN)", p.pid, err)
		}
		if err != nil {
			return nil, fmt.Errorf("children of %d: %w", p.pid, err)
		}
		for _, c := range cs {
			out = append(out, kid{c, th.t.Tid})
		}
	}
	return out, nil
}

// requeueCaught queues again, in every process, the signals the kernel
// dequeued for its threads while cryo stopped them. No call can be
// injected after it: a queued SIGSTOP would be taken again.
func (t *tree) requeueCaught() error {
	var errs []error
	for _, p := range t.procs {
		errs = append(errs, p.requeueCaught())
	}
	return errors.Join(errs...)
}

func (t *tree) release() error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		if err := t.procs[i].release(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// kill ends every dumped process, children first.
func (t *tree) kill() error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		if err := t.procs[i].kill(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// write writes the images: each process's own, then what they share.
func (t *tree) write(dir *image.Dir, sc *seccomp.SeccompEntry, st *Stats) error {
	var entries []proto.Message
	for _, p := range t.procs {
		threads := make([]uint32, len(p.threads))
		for i, th := range p.threads {
			threads[i] = uint32(th.t.Tid)
		}
		ppid := uint32(p.stat.PPid)
		if p.index == 0 {
			ppid = 0 // the root, as criu writes it
		}
		entries = append(entries, &pstree.PstreeEntry{
			Pid: proto.Uint32(uint32(p.pid)), Ppid: proto.Uint32(ppid),
			Pgid: proto.Uint32(uint32(p.stat.Pgrp)), Sid: proto.Uint32(uint32(p.stat.Session)),
			Threads: threads,
		})
	}
	for _, z := range t.zombies {
		entries = append(entries, &pstree.PstreeEntry{
			Pid: proto.Uint32(uint32(z.pid)), Ppid: proto.Uint32(uint32(z.ppid)),
			Pgid: proto.Uint32(uint32(z.pgid)), Sid: proto.Uint32(uint32(z.sid)),
			Threads: []uint32{uint32(z.pid)},
		})
		zs := z.status
		if err := imageset.Write(dir, imageset.Core(uint32(z.pid)), &core.CoreEntry{
			Mtype: core.CoreEntry_X86_64.Enum(),
			Tc: &core.TaskCoreEntry{
				TaskState: proto.Uint32(taskDead), ExitCode: proto.Uint32(uint32(z.exitCode)),
				Personality: proto.Uint32(0), Flags: proto.Uint32(0), BlkSigset: proto.Uint64(zs.SigBlk),
				Comm: proto.String(zs.Name),
			},
			// A zombie keeps its credentials, which /proc shows; its
			// securebits no one can ask.
			ThreadCore: &core.ThreadCoreEntry{Creds: statusCreds(zs, 0), BlkSigset: proto.Uint64(zs.SigBlk), Comm: proto.String(zs.Name),
				FutexRla: proto.Uint64(0), FutexRlaLen: proto.Uint32(0)},
		}); err != nil {
			return err
		}
		// A zombie has no mm, files, fs or handlers, only namespaces:
		// CRIU writes 0 for the others.
		none := proto.Uint32(0)
		zids := &core.TaskKobjIdsEntry{VmId: none, FilesId: none, FsId: none, SighandId: none}
		t.ns.nsIDs(zids, false)
		if err := imageset.Write(dir, imageset.Ids(uint32(z.pid)), zids); err != nil {
			return err
		}
	}
	if err := imageset.Write(dir, imageset.Pstree, entries...); err != nil {
		return err
	}
	for _, p := range t.procs {
		if err := p.writeProcess(dir, t.snaps[p], st); err != nil {
			return err
		}
	}
	if err := t.files.Write(&files.Side{Dir: dir, Shmem: func(shmid uint32, src *os.File, size int64) error {
		return t.procs[0].writeShmem(dir, shmid, src, size)
	}}); err != nil {
		return err
	}
	if err := t.sysv.Write(dir); err != nil {
		return err
	}
	if len(sc.SeccompFilters) > 0 {
		if err := imageset.Write(dir, imageset.Seccomp, sc); err != nil {
			return err
		}
	}
	if err := meta.Write(dir, t.meta()); err != nil {
		return err
	}
	if err := t.writeNamespaces(dir); err != nil {
		return err
	}
	// root_ids are the dumper's own ids, as CRIU writes them: its restore
	// compares the root task's with them, and an equal fd table reads as
	// a corrupt image. Its mm, fd table, fs and handlers are none of the
	// tree's; its namespaces are the tree's.
	var tcpClose *bool
	if t.opts.TCPClose {
		tcpClose = proto.Bool(true) // CRIU's restore then wants --tcp-close
	}
	self := proto.Uint32(uint32(len(t.procs) + len(t.zombies) + 1))
	rootIDs := &core.TaskKobjIdsEntry{VmId: self, FilesId: self, FsId: self, SighandId: self}
	t.ns.nsIDs(rootIDs, true)
	return imageset.Write(dir, imageset.Inventory, &inventory.InventoryEntry{
		ImgVersion:  proto.Uint32(2), // CRTOOLS_IMAGES_V1_1
		FdinfoPerId: proto.Bool(true),
		RootIds:     rootIDs,
		NsPerId:     proto.Bool(true),
		Lsmtype:     inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime:  proto.Uint64(uint64(time.Now().UnixMicro())),
		TcpClose:    tcpClose,
	})
}

func (t *tree) meta() *meta.Meta {
	var uts unix.Utsname
	unix.Uname(&uts)
	acc := map[int][]uint64{}
	inh := map[int][][2]uint64{}
	lof, sealed := map[int][]uint64{}, map[int][]uint64{}
	for _, p := range t.procs {
		for _, a := range t.snaps[p].areas {
			if a.m.VmFlags.Has(procfs.VmAccount) && !a.m.Perms.Write && !a.m.Perms.Shared {
				acc[p.pid] = append(acc[p.pid], a.m.Start)
			}
		}
		if len(p.inherited) > 0 {
			inh[p.pid] = p.inherited
		}
		if len(p.lockOnFault) > 0 {
			lof[p.pid] = p.lockOnFault
		}
		if len(p.sealed) > 0 {
			sealed[p.pid] = p.sealed
		}
	}
	tasks := map[int]*meta.Task{}
	for _, p := range t.procs {
		for _, th := range p.threads {
			tasks[th.t.Tid] = p.metaTask(th, t.baseSlice)
		}
	}
	for _, z := range t.zombies {
		mt := &meta.Task{ZombieIgnored: z.status.SigIgn, ZombieCaught: z.status.SigCgt}
		if sig := z.exitSignal; sig != int(unix.SIGCHLD) {
			mt.ExitSignal = &sig
		}
		if tid := z.parentTid; tid != z.ppid {
			mt.ParentTid = &tid
		}
		tasks[z.pid] = mt
	}
	root := t.snaps[t.procs[0]]
	boot, err := procfs.BootID()
	if err != nil {
		t.log.Warn("no boot id: a restore will not look for the outside ends of pipes", "err", err)
	}
	keeperName := t.keeperName
	lockName := ""
	if t.lock != nil {
		lockName = t.lock.Name()
	}
	return &meta.Meta{
		BootID:            boot,
		Keeper:            keeperName,
		KeptPipes:         t.kept,
		Tasks:             tasks,
		Kernel:            unix.ByteSliceToString(uts.Release[:]),
		Machine:           unix.ByteSliceToString(uts.Machine[:]),
		VdsoHash:          root.vdsoHash,
		XFeatures:         xstate.HostFeatures(),
		Cmdline:           root.cmdline,
		Created:           time.Now().UTC(),
		AccountedReadOnly: acc,
		Inherited:         inh,
		LockOnFault:       lof,
		Sealed:            sealed,
		SemPids:           t.sysv.SemPids(),
		MsgPids:           t.sysv.MsgPids(),
		NetworkLock:       lockName,
	}
}

// writeState records what the kernel shows of the frozen tree now, every
// injection undone and every signal the freeze took queued again
// (cryo-state.json), for `cryo restore --verify`.
func (t *tree) writeState() error {
	smaps := map[int][]procfs.Mapping{}
	for _, p := range t.procs {
		smaps[p.pid] = p.smaps
	}
	st, err := procstate.TakeWith(t.opts.Pid, smaps)
	if err != nil {
		// The record only serves restore --verify: failing to take it (a
		// machine-wide file such as /proc/locks that does not parse) costs
		// the record, never the dump.
		t.log.Warn("no state record for restore --verify", "err", err)
		return nil
	}
	b, err := st.Marshal()
	if err != nil {
		return err
	}
	w, err := t.dir.CreateRaw(imageset.StateName)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// writeTimens writes timens-0.img as CRIU does for a tree in the root time
// namespace: the monotonic and boot-time clocks at dump, from which a
// restore into a new time namespace would set its offsets. A restore in the
// dumper's time namespace (the only one cryo dumps) does not read it.
func writeTimens(dir *image.Dir) error {
	var mono, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return fmt.Errorf("clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	ts := func(t unix.Timespec) *timens.Timespec {
		return &timens.Timespec{TvSec: proto.Uint64(uint64(t.Sec)), TvNsec: proto.Uint64(uint64(t.Nsec))}
	}
	return imageset.Write(dir, imageset.Timens(0), &timens.TimensEntry{Monotonic: ts(mono), Boottime: ts(boot)})
}

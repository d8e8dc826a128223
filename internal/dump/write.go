package dump

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rseq"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/xstate"
)

// CRIU's task_state values (criu/include/task-entries.h).
const (
	taskAlive   = 1
	taskDead    = 2
	taskStopped = 3
)

// id numbers the kernel objects of process p (mm, fd table, fs, signal
// handlers) and its pages file. Each process of the tree has its own; objects
// shared between processes (CLONE_VM, CLONE_FILES... without CLONE_THREAD)
// are refused once the tree is frozen (shared.go).
func (p *process) id() uint32 { return uint32(p.index + 1) }

// shmemPagesBase numbers the pages files of shared objects (memfd,
// shared anonymous memory) after any process's.
const shmemPagesBase = 1 << 20

func (p *process) ids() *core.TaskKobjIdsEntry {
	id := proto.Uint32(p.id())
	ids := &core.TaskKobjIdsEntry{VmId: id, FilesId: id, FsId: id, SighandId: id}
	p.ns.nsIDs(ids, false)
	return ids
}

// writeProcess writes the images of one process: its threads' cores, mm,
// fs, fd table and pages. What the tree shares is written by tree.write.
func (p *process) writeProcess(dir *image.Dir, s *snapshot, st *Stats) error {
	pid := p.pid
	for i, th := range p.threads {
		c, err := p.coreEntry(th, i == 0, s)
		if err != nil {
			return err
		}
		if err := imageset.Write(dir, imageset.Core(uint32(th.t.Tid)), c); err != nil {
			return err
		}
	}
	if err := imageset.Write(dir, imageset.Ids(uint32(pid)), p.ids()); err != nil {
		return err
	}
	if err := imageset.Write(dir, imageset.Mm(uint32(pid)), p.mmEntry(s)); err != nil {
		return err
	}
	if err := imageset.Write(dir, imageset.Fs(uint32(pid)), &fs.FsEntry{
		CwdId: proto.Uint32(s.cwdID), RootId: proto.Uint32(s.rootID), Umask: proto.Uint32(uint32(p.status.Umask)),
	}); err != nil {
		return err
	}
	fds := make([]proto.Message, len(p.fds))
	for i, e := range p.fds {
		fds[i] = e
	}
	if err := imageset.Write(dir, imageset.Fdinfo(p.id()), fds...); err != nil {
		return err
	}

	// Pages last: the big part, streamed.
	pm := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(p.id())}}
	var total uint64
	for _, e := range pagemapEntries(s.runs) {
		pm = append(pm, e)
		total += e.GetNrPages()
	}
	if err := imageset.Write(dir, imageset.Pagemap(uint32(pid)), pm...); err != nil {
		return err
	}
	pw, err := dir.CreatePages(p.id())
	if err != nil {
		return err
	}
	var w interface{ Write([]byte) (int, error) } = pw
	if p.opts.Progress != nil {
		w = &progressWriter{w: pw, total: total, f: p.opts.Progress}
	}
	tp := time.Now()
	n, err := p.writePages(s.runs, w)
	p.log.Debug("pages written", "pid", pid, "pages", n, "took", time.Since(tp))
	if err != nil {
		pw.Close()
		return err
	}
	if err := pw.Close(); err != nil {
		return err
	}
	for _, a := range s.areas {
		st.PagesScanned += a.m.Len() / pageSize
	}
	st.PagesWritten += n
	return nil
}

type progressWriter struct {
	w           *image.PagesWriter
	done, total uint64
	f           func(done, total uint64)
}

// WriteChunks passes pre-summed chunks on, counting them.
func (pw *progressWriter) WriteChunks(bufs [][]byte, sums []uint32) (int, error) {
	n, err := pw.w.WriteChunks(bufs, sums)
	pw.done += uint64(n) / pageSize
	pw.f(pw.done, pw.total)
	return n, err
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.done += uint64(n) / pageSize
	pw.f(pw.done, pw.total)
	return n, err
}

func gpregs(r *unix.PtraceRegs) *x86.UserX86RegsEntry {
	return &x86.UserX86RegsEntry{
		R15: proto.Uint64(r.R15), R14: proto.Uint64(r.R14), R13: proto.Uint64(r.R13), R12: proto.Uint64(r.R12),
		Bp: proto.Uint64(r.Rbp), Bx: proto.Uint64(r.Rbx), R11: proto.Uint64(r.R11), R10: proto.Uint64(r.R10),
		R9: proto.Uint64(r.R9), R8: proto.Uint64(r.R8), Ax: proto.Uint64(r.Rax), Cx: proto.Uint64(r.Rcx),
		Dx: proto.Uint64(r.Rdx), Si: proto.Uint64(r.Rsi), Di: proto.Uint64(r.Rdi), OrigAx: proto.Uint64(r.Orig_rax),
		Ip: proto.Uint64(r.Rip), Cs: proto.Uint64(r.Cs), Flags: proto.Uint64(r.Eflags), Sp: proto.Uint64(r.Rsp),
		Ss: proto.Uint64(r.Ss), FsBase: proto.Uint64(r.Fs_base), GsBase: proto.Uint64(r.Gs_base),
		Ds: proto.Uint64(r.Ds), Es: proto.Uint64(r.Es), Fs: proto.Uint64(r.Fs), Gs: proto.Uint64(r.Gs),
		Mode: x86.UserX86RegsMode_NATIVE.Enum(),
	}
}

func signalQueue(sis []kabi.Siginfo) *siginfo.SignalQueueEntry {
	q := &siginfo.SignalQueueEntry{}
	for _, si := range sis {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: append([]byte(nil), si[:]...)})
	}
	return q
}

func capWords(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }

// statusCreds is the creds entry of a task whose status is st.
func statusCreds(st *procfs.Status, secbits uint32) *creds.CredsEntry {
	return &creds.CredsEntry{
		Uid: proto.Uint32(st.Uid[0]), Euid: proto.Uint32(st.Uid[1]), Suid: proto.Uint32(st.Uid[2]), Fsuid: proto.Uint32(st.Uid[3]),
		Gid: proto.Uint32(st.Gid[0]), Egid: proto.Uint32(st.Gid[1]), Sgid: proto.Uint32(st.Gid[2]), Fsgid: proto.Uint32(st.Gid[3]),
		CapInh: capWords(st.CapInh), CapPrm: capWords(st.CapPrm), CapEff: capWords(st.CapEff),
		CapBnd: capWords(st.CapBnd), CapAmb: capWords(st.CapAmb),
		Secbits: proto.Uint32(secbits), Groups: st.Groups,
		NoNewPrivs: proto.Uint32(boolU32(st.NoNewPrivs)),
	}
}

func (p *process) coreEntry(th *thread, leader bool, s *snapshot) (*core.CoreEntry, error) {
	fp, err := xstate.Encode(th.xsave)
	if err != nil {
		return nil, fmt.Errorf("thread %d: %w", th.t.Tid, err)
	}
	st := th.status
	tc := &core.ThreadCoreEntry{
		FutexRla:    proto.Uint64(th.robust[0]),
		FutexRlaLen: proto.Uint32(uint32(th.robust[1])),
		SchedNice:   proto.Int32(int32(th.stat.Nice)), // sched_getattr shows none for real-time threads
		SchedPolicy: proto.Uint32(th.attrs.schedPolicy()),
		SchedPrio:   proto.Uint32(th.attrs.sched.Priority),
		BlkSigset:   proto.Uint64(th.sigmask),
		Sas: &core.ThreadSasEntry{
			SsSp: proto.Uint64(th.sas.Sp), SsSize: proto.Uint64(th.sas.Size), SsFlags: proto.Uint32(uint32(th.sas.Flags)),
		},
		PdeathSig:   proto.Uint32(uint32(th.pdeath)),
		SignalsP:    signalQueue(th.pending),
		Creds:       statusCreds(st, th.secbits),
		SeccompMode: core.SeccompMode(st.Seccomp).Enum(),
		Comm:        proto.String(th.comm),
	}
	if len(th.filters) > 0 {
		tc.SeccompFilter = proto.Uint32(th.filterIdx)
	}
	if th.rseq.RseqAbiPointer != 0 {
		tc.RseqEntry = &rseq.RseqEntry{
			RseqAbiPointer: proto.Uint64(th.rseq.RseqAbiPointer),
			RseqAbiSize:    proto.Uint32(th.rseq.RseqAbiSize),
			Signature:      proto.Uint32(th.rseq.Signature),
		}
	}
	c := &core.CoreEntry{
		Mtype: core.CoreEntry_X86_64.Enum(),
		ThreadInfo: &x86.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(th.tidAddr),
			Gpregs:       gpregs(&th.t.Regs),
			Fpregs:       fp,
		},
		ThreadCore: tc,
	}
	if !leader {
		return c, nil
	}
	pi := s.proc
	task := &core.TaskCoreEntry{
		TaskState:      proto.Uint32(taskAlive),
		ExitCode:       proto.Uint32(0),
		Personality:    proto.Uint32(s.persona),
		Flags:          proto.Uint32(p.stat.Flags),
		BlkSigset:      proto.Uint64(th.sigmask),
		Comm:           proto.String(th.comm),
		SignalsS:       signalQueue(pi.shared),
		OomScoreAdj:    proto.Int32(int32(s.oomAdj)),
		ChildSubreaper: proto.Bool(pi.subreaper),
		Timers:         timersEntry(pi),
		Rlimits:        &core.TaskRlimitsEntry{},
	}
	for _, r := range s.rlimits {
		task.Rlimits.Rlimits = append(task.Rlimits.Rlimits, &rlimit.RlimitEntry{Cur: proto.Uint64(r.Cur), Max: proto.Uint64(r.Max)})
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		a := pi.sigactions[sig-1]
		task.Sigactions = append(task.Sigactions, &sa.SaEntry{
			Sigaction: proto.Uint64(a.Handler), Flags: proto.Uint64(a.Flags),
			Restorer: proto.Uint64(a.Restorer), Mask: proto.Uint64(a.Mask),
		})
	}
	task.Loginuid = proto.Uint32(th.attrs.loginuid)
	task.MembarrierRegistrationMask = proto.Uint32(th.attrs.membarrier)
	if p.stopSig != 0 {
		task.TaskState = proto.Uint32(taskStopped)
		task.StopSigno = proto.Uint32(uint32(p.stopSig))
	}
	c.Tc = task
	c.Ids = p.ids()
	return c, nil
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func itimer(v kabi.Itimerval) *timer.ItimerEntry {
	return &timer.ItimerEntry{
		Isec: proto.Uint64(uint64(v.IntervalSec)), Iusec: proto.Uint64(uint64(v.IntervalUsec)),
		Vsec: proto.Uint64(uint64(v.ValueSec)), Vusec: proto.Uint64(uint64(v.ValueUsec)),
	}
}

func timersEntry(pi *procInfo) *timer.TaskTimersEntry {
	t := &timer.TaskTimersEntry{Real: itimer(pi.itimers[0]), Virt: itimer(pi.itimers[1]), Prof: itimer(pi.itimers[2])}
	for _, pt := range pi.timers {
		t.Posix = append(t.Posix, &timer.PosixTimerEntry{
			ItId: proto.Uint32(uint32(pt.id)), ClockId: proto.Uint32(uint32(pt.clock)),
			SiSigno: proto.Uint32(uint32(pt.signo)), ItSigevNotify: proto.Uint32(uint32(pt.notify)),
			SivalPtr: proto.Uint64(pt.sival), Overrun: proto.Uint32(uint32(pt.overrun)),
			Isec: proto.Uint64(uint64(pt.spec.IntervalSec)), Insec: proto.Uint64(uint64(pt.spec.IntervalNsec)),
			Vsec: proto.Uint64(uint64(pt.spec.ValueSec)), Vnsec: proto.Uint64(uint64(pt.spec.ValueNsec)),
			NotifyThreadId: proto.Int32(int32(pt.notifyTid)),
		})
	}
	return t
}

func (p *process) mmEntry(s *snapshot) *mm.MmEntry {
	st := p.stat
	e := &mm.MmEntry{
		MmStartCode: proto.Uint64(st.Startcode), MmEndCode: proto.Uint64(st.Endcode),
		MmStartData: proto.Uint64(st.StartData), MmEndData: proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.Startstack), MmStartBrk: proto.Uint64(st.StartBrk),
		MmBrk: proto.Uint64(s.proc.brk), MmArgStart: proto.Uint64(st.ArgStart), MmArgEnd: proto.Uint64(st.ArgEnd),
		MmEnvStart: proto.Uint64(st.EnvStart), MmEnvEnd: proto.Uint64(st.EnvEnd),
		ExeFileId:   proto.Uint32(s.exeID),
		Dumpable:    proto.Int32(int32(s.proc.dumpable)),
		ThpDisabled: proto.Bool(s.proc.thpOff),
	}
	for i := 0; i+8 <= len(s.auxv); i += 8 {
		e.MmSavedAuxv = append(e.MmSavedAuxv, binary.LittleEndian.Uint64(s.auxv[i:]))
	}
	for _, a := range s.areas {
		e.Vmas = append(e.Vmas, a.entry)
	}
	return e
}

func writeStats(dir *image.Dir, st *Stats) error {
	return imageset.Write(dir, imageset.StatsDump, &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime:       proto.Uint32(uint32(st.Freezing.Microseconds())),
		FrozenTime:         proto.Uint32(uint32(st.Frozen.Microseconds())),
		MemdumpTime:        proto.Uint32(uint32(st.MemDump.Microseconds())),
		MemwriteTime:       proto.Uint32(uint32(st.MemDump.Microseconds())),
		PagesScanned:       proto.Uint64(st.PagesScanned),
		PagesSkippedParent: proto.Uint64(0),
		PagesWritten:       proto.Uint64(st.PagesWritten),
		PagesLazy:          proto.Uint64(0),
	}})
}

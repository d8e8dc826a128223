package show

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
)

const pageSize = 4096

// CRIU's vma_entry.status bits (include/image.h); they are image ABI.
const (
	vmaStack       = 1 << 1
	vmaVsyscall    = 1 << 2
	vmaVDSO        = 1 << 3
	vmaHeap        = 1 << 5
	vmaFilePrivate = 1 << 6
	vmaFileShared  = 1 << 7
	vmaAnonShared  = 1 << 8
	vmaSysVIPC     = 1 << 10
	vmaSocket      = 1 << 11
	vmaVVAR        = 1 << 12
	vmaMemfd       = 1 << 14
)

// Load opens dir (verifying its checksums) and gathers what it holds.
func Load(dir string) (*Image, error) {
	d, err := image.Open(dir)
	if err != nil {
		return nil, err
	}
	img := &Image{Dir: dir, Files: len(d.Names())}

	files, err := loadFiles(d)
	if err != nil {
		return nil, err
	}
	var tree []*pstree.PstreeEntry
	if err := readAll(d, "pstree.img", "PSTREE", func() proto.Message { return &pstree.PstreeEntry{} }, func(m proto.Message) {
		tree = append(tree, m.(*pstree.PstreeEntry))
	}); err != nil {
		return nil, err
	}
	for _, pe := range tree {
		p, err := loadProcess(d, pe, files)
		if err != nil {
			return nil, fmt.Errorf("process %d: %w", pe.GetPid(), err)
		}
		img.Processes = append(img.Processes, p)
	}
	if d.Has("stats-dump.img") {
		var s stats.StatsEntry
		if err := d.ReadOne("stats-dump.img", "STATS", &s); err != nil {
			return nil, err
		}
		if ds := s.GetDump(); ds != nil {
			img.Stats = &DumpStats{
				FreezingTimeUS: ds.GetFreezingTime(), FrozenTimeUS: ds.GetFrozenTime(),
				MemdumpTimeUS: ds.GetMemdumpTime(), MemwriteTimeUS: ds.GetMemwriteTime(),
				PagesScanned: ds.GetPagesScanned(), PagesSkipped: ds.GetPagesSkippedParent(),
				PagesWritten: ds.GetPagesWritten(), PagesLazy: ds.GetPagesLazy(),
			}
		}
	}
	return img, nil
}

// readAll calls fn with every entry of an image.
func readAll(d *image.Dir, name, magic string, next func() proto.Message, fn func(proto.Message)) error {
	r, err := d.Open(name, magic)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		m := next()
		if err := r.Next(m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		fn(m)
	}
}

func loadFiles(d *image.Dir) (map[uint32]*fdinfo.FileEntry, error) {
	files := map[uint32]*fdinfo.FileEntry{}
	if !d.Has("files.img") {
		return files, nil
	}
	err := readAll(d, "files.img", "FILES", func() proto.Message { return &fdinfo.FileEntry{} }, func(m proto.Message) {
		fe := m.(*fdinfo.FileEntry)
		files[fe.GetId()] = fe
	})
	return files, err
}

// taskDead is CRIU's task_state of a zombie (criu/include/task-entries.h).
const taskDead = 2

func loadProcess(d *image.Dir, pe *pstree.PstreeEntry, files map[uint32]*fdinfo.FileEntry) (*Process, error) {
	// Empty lists stay [] in JSON, never null: consumers index them.
	p := &Process{PID: pe.GetPid(), PPID: pe.GetPpid(), PGID: pe.GetPgid(), SID: pe.GetSid(),
		Mappings: []Mapping{}, FDs: []FD{}}
	threads := pe.GetThreads()
	if len(threads) == 0 {
		threads = []uint32{p.PID}
	}
	var leader *criu_core.CoreEntry
	for _, tid := range threads {
		var c criu_core.CoreEntry
		if err := d.ReadOne(fmt.Sprintf("core-%d.img", tid), "CORE", &c); err != nil {
			return nil, err
		}
		if tid == p.PID {
			leader = &c
		}
		if c.GetTc().GetTaskState() == taskDead {
			break // a zombie: no registers, memory or files
		}
		regs := c.GetThreadInfo().GetGpregs()
		mask := c.GetThreadCore().GetBlkSigset()
		if c.GetThreadCore().GetBlkSigset() == 0 && c.GetTc() != nil {
			mask = c.GetTc().GetBlkSigset()
		}
		p.Threads = append(p.Threads, Thread{
			TID: tid, IP: hex(regs.GetIp()), SP: hex(regs.GetSp()), SigMask: hex(mask),
			Pending: len(c.GetThreadCore().GetSignalsP().GetSignals()),
		})
	}
	if leader == nil {
		return nil, fmt.Errorf("thread-group leader %d is not among its threads %v", p.PID, threads)
	}
	tc := leader.GetTc()
	if tc.GetTaskState() == taskDead {
		p.Zombie, p.ExitStatus = true, tc.GetExitCode()
		p.Threads = []Thread{}
		p.SignalHandlers = []SigHandler{}
		return p, nil
	}
	p.Comm = tc.GetComm()
	p.SharedPending = len(tc.GetSignalsS().GetSignals())
	p.SignalHandlers = handlers(tc.GetSigactions())

	var m mm.MmEntry
	if err := d.ReadOne(fmt.Sprintf("mm-%d.img", p.PID), "MM", &m); err != nil {
		return nil, err
	}
	if fe := files[m.GetExeFileId()]; fe != nil {
		p.Exe = fe.GetReg().GetName()
	}
	runs, err := loadPagemap(d, p.PID)
	if err != nil {
		return nil, err
	}
	for _, v := range m.GetVmas() {
		p.Mappings = append(p.Mappings, mapping(v, files, runs))
	}

	if d.Has(fmt.Sprintf("fs-%d.img", p.PID)) {
		var f fs.FsEntry
		if err := d.ReadOne(fmt.Sprintf("fs-%d.img", p.PID), "FS", &f); err != nil {
			return nil, err
		}
		if f.Umask != nil {
			p.Umask = f.Umask
		}
		if fe := files[f.GetCwdId()]; fe != nil {
			p.Cwd = fe.GetReg().GetName()
		}
	}

	fdName := fmt.Sprintf("fdinfo-%d.img", leader.GetIds().GetFilesId())
	if leader.GetIds() != nil && d.Has(fdName) {
		err := readAll(d, fdName, "FDINFO", func() proto.Message { return &fdinfo.FdinfoEntry{} }, func(m proto.Message) {
			p.FDs = append(p.FDs, fd(m.(*fdinfo.FdinfoEntry), files))
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(p.FDs, func(i, j int) bool { return p.FDs[i].FD < p.FDs[j].FD })
	}
	return p, nil
}

// run is a range of dumped pages, [start, end).
type run struct{ start, end uint64 }

func loadPagemap(d *image.Dir, pid uint32) ([]run, error) {
	name := fmt.Sprintf("pagemap-%d.img", pid)
	if !d.Has(name) {
		return nil, nil
	}
	r, err := d.Open(name, "PAGEMAP")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.Next(&pagemap.PagemapHead{}); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var runs []run
	for {
		var e pagemap.PagemapEntry
		if err := r.Next(&e); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		n := e.GetNrPages()
		if e.NrPages == nil {
			n = uint64(e.GetCompatNrPages())
		}
		start := e.GetVaddr()
		// Saturate: an image may claim more pages than the address space holds.
		hi, length := bits.Mul64(n, pageSize)
		end, carry := bits.Add64(start, length, 0)
		if hi != 0 || carry != 0 {
			end = ^uint64(0)
		}
		runs = append(runs, run{start, end})
	}
	return runs, nil
}

func mapping(v *vma.VmaEntry, files map[uint32]*fdinfo.FileEntry, runs []run) Mapping {
	start, end := v.GetStart(), v.GetEnd()
	m := Mapping{Start: hex(start), End: hex(end), Prot: prot(v.GetProt()), Share: "private"}
	if end > start {
		m.Size = end - start
	}
	if v.GetFlags()&0x01 != 0 { // MAP_SHARED
		m.Share = "shared"
	}
	st := v.GetStatus()
	switch {
	case st&vmaVDSO != 0:
		m.Kind, m.Path = "vdso", "[vdso]"
	case st&vmaVVAR != 0:
		m.Kind, m.Path = "vvar", "[vvar]"
	case st&vmaVsyscall != 0:
		m.Kind, m.Path = "vsyscall", "[vsyscall]"
	case st&vmaStack != 0:
		m.Kind, m.Path = "stack", "[stack]"
	case st&vmaHeap != 0:
		m.Kind, m.Path = "heap", "[heap]"
	case st&vmaSysVIPC != 0:
		m.Kind = "sysvipc"
		m.Path = fmt.Sprintf("SYSV shm key %#x", v.GetShmid())
	case st&vmaSocket != 0:
		m.Kind = "socket"
	case st&(vmaFilePrivate|vmaFileShared|vmaMemfd) != 0:
		m.Kind = "file"
		if st&vmaMemfd != 0 {
			m.Kind = "memfd"
		}
		// For file mappings CRIU stores the files.img id in shmid.
		if v.GetShmid() <= 0xffffffff {
			if fe := files[uint32(v.GetShmid())]; fe != nil {
				m.Path = fe.GetReg().GetName()
				if fe.GetMemfd() != nil {
					m.Path = fmt.Sprintf("memfd inode %d", fe.GetMemfd().GetInodeId())
				}
			}
		}
		if m.Path == "" {
			m.Path = fmt.Sprintf("file id %d (not in files.img)", v.GetShmid())
		}
	case st&vmaAnonShared != 0:
		m.Kind = "anon"
	default:
		m.Kind = "anon"
	}
	for _, r := range runs {
		lo, hi := max(r.start, start), min(r.end, end)
		if hi > lo {
			m.PagesDumped += (hi - lo) / pageSize
		}
	}
	return m
}

func prot(p uint32) string {
	b := []byte("---")
	for i, c := range "rwx" {
		if p&(1<<i) != 0 {
			b[i] = byte(c)
		}
	}
	return string(b)
}

func fd(e *fdinfo.FdinfoEntry, files map[uint32]*fdinfo.FileEntry) FD {
	out := FD{FD: e.GetFd(), Type: e.GetType().String(), CloExec: e.GetFlags()&1 != 0} // FD_CLOEXEC
	fe := files[e.GetId()]
	if fe == nil {
		out.Path = fmt.Sprintf("file id %d (not in files.img)", e.GetId())
		return out
	}
	switch {
	case fe.GetReg() != nil:
		r := fe.GetReg()
		out.Path, out.Flags, out.Pos = r.GetName(), openFlags(r.GetFlags()), r.GetPos()
	case fe.GetPipe() != nil:
		out.Path, out.Flags = fmt.Sprintf("pipe:[%d]", fe.GetPipe().GetPipeId()), openFlags(fe.GetPipe().GetFlags())
	case fe.GetFifo() != nil:
		out.Path = fmt.Sprintf("fifo:[%d]", fe.GetFifo().GetPipeId())
	case fe.GetEfd() != nil:
		out.Path = fmt.Sprintf("anon_inode:[eventfd] count %d", fe.GetEfd().GetCounter())
	case fe.GetUsk() != nil:
		out.Path = fmt.Sprintf("socket:[%d] %q", fe.GetUsk().GetIno(), fe.GetUsk().GetName())
	case fe.GetMemfd() != nil:
		out.Path, out.Pos = fmt.Sprintf("memfd inode %d", fe.GetMemfd().GetInodeId()), fe.GetMemfd().GetPos()
		out.Flags = openFlags(fe.GetMemfd().GetFlags())
	default:
		out.Path = fmt.Sprintf("%s id %d", fe.GetType(), fe.GetId())
	}
	return out
}

// openFlags names the O_* bits of an open file's status flags.
func openFlags(f uint32) string {
	names := []string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}
	parts := []string{names[f&3]}
	for _, b := range []struct {
		bit  uint32
		name string
	}{
		{0o2000, "O_APPEND"}, {0o4000, "O_NONBLOCK"}, {0o4010000, "O_SYNC"}, {0o10000, "O_DSYNC"}, {0o20000, "O_ASYNC"},
		{0o40000, "O_DIRECT"}, {0o100000, "O_LARGEFILE"}, {0o200000, "O_DIRECTORY"},
		{0o400000, "O_NOFOLLOW"}, {0o1000000, "O_NOATIME"}, {0o2000000, "O_CLOEXEC"}, {0o10000000, "O_PATH"},
	} {
		if f&b.bit == b.bit {
			parts = append(parts, b.name)
			f &^= b.bit
		}
	}
	if rest := f &^ 3; rest != 0 {
		parts = append(parts, fmt.Sprintf("%#o", rest))
	}
	return strings.Join(parts, "|")
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

package show

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/imageset"
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

// Load opens dir (verifying its checksums, with the loader restore uses)
// and gathers what it holds.
func Load(dir string) (*Image, error) {
	set, err := imageset.Load(dir)
	if err != nil {
		return nil, err
	}
	img := &Image{Dir: dir, Files: len(set.Dir.Names())}
	for _, p := range set.Procs {
		img.Processes = append(img.Processes, process(set, p))
	}
	if ds := set.Stats.GetDump(); ds != nil {
		img.Stats = &DumpStats{
			FreezingTimeUS: ds.GetFreezingTime(), FrozenTimeUS: ds.GetFrozenTime(),
			MemdumpTimeUS: ds.GetMemdumpTime(), MemwriteTimeUS: ds.GetMemwriteTime(),
			PagesScanned: ds.GetPagesScanned(), PagesSkipped: ds.GetPagesSkippedParent(),
			PagesWritten: ds.GetPagesWritten(), PagesLazy: ds.GetPagesLazy(),
		}
	}
	return img, nil
}

func process(set *imageset.Set, pe *imageset.Proc) *Process {
	files := set.Files
	te := pe.Tree
	// Empty lists stay [] in JSON, never null: consumers index them.
	p := &Process{PID: te.GetPid(), PPID: te.GetPpid(), PGID: te.GetPgid(), SID: te.GetSid(),
		Mappings: []Mapping{}, FDs: []FD{}, Threads: []Thread{}}
	tc := pe.Cores[0].GetTc()
	if pe.Zombie {
		p.Zombie, p.ExitStatus = true, tc.GetExitCode()
		p.SignalHandlers = []SigHandler{}
		return p
	}
	for i, c := range pe.Cores {
		regs := c.GetThreadInfo().GetGpregs()
		mask := c.GetThreadCore().GetBlkSigset()
		if c.GetThreadCore().BlkSigset == nil && c.GetTc() != nil {
			mask = c.GetTc().GetBlkSigset()
		}
		p.Threads = append(p.Threads, Thread{
			TID: te.GetThreads()[i], IP: hex(regs.GetIp()), SP: hex(regs.GetSp()), SigMask: hex(mask),
			Pending: len(c.GetThreadCore().GetSignalsP().GetSignals()),
		})
	}
	p.Comm = tc.GetComm()
	if tc.GetTaskState() == imageset.TaskStopped {
		p.StoppedBy = unix.SignalName(unix.Signal(tc.GetStopSigno()))
		if p.StoppedBy == "" {
			p.StoppedBy = fmt.Sprintf("signal %d", tc.GetStopSigno())
		}
	}
	p.SharedPending = len(tc.GetSignalsS().GetSignals())
	p.SignalHandlers = handlers(tc.GetSigactions())
	p.Exe = files[pe.Mm.GetExeFileId()].GetReg().GetName()
	runs := pageRuns(pe.Pagemap)
	for _, v := range pe.Mm.GetVmas() {
		p.Mappings = append(p.Mappings, mapping(v, files, runs))
	}
	p.Umask = pe.Fs.Umask
	p.Cwd = files[pe.Fs.GetCwdId()].GetReg().GetName()
	for _, e := range pe.Fds {
		p.FDs = append(p.FDs, fd(e, files))
	}
	sort.Slice(p.FDs, func(i, j int) bool { return p.FDs[i].FD < p.FDs[j].FD })
	return p
}

// run is a range of dumped pages, [start, end).
type run struct{ start, end uint64 }

func pageRuns(entries []*pagemap.PagemapEntry) []run {
	var runs []run
	for _, e := range entries {
		start := e.GetVaddr()
		// Saturate: an image may claim more pages than the address space holds.
		hi, length := bits.Mul64(e.GetNrPages(), pageSize)
		end, carry := bits.Add64(start, length, 0)
		if hi != 0 || carry != 0 {
			end = ^uint64(0)
		}
		runs = append(runs, run{start, end})
	}
	return runs
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
		m.Path = fmt.Sprintf("System V shared memory id %d", v.GetShmid())
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

func fd(e *fdinfo.FdinfoEntry, byID map[uint32]*fdinfo.FileEntry) FD {
	out := FD{FD: e.GetFd(), Type: e.GetType().String(), CloExec: e.GetFlags()&1 != 0} // FD_CLOEXEC
	fe := byID[e.GetId()]                                                              // imageset.Load checked it is there
	d := files.Describe(fe)
	out.Path, out.Pos = d.Path, d.Pos
	if d.HasFlags {
		out.Flags = openFlags(d.Flags)
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

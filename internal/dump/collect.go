package dump

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// snapshot is everything read from the frozen process, ready to be written.
type snapshot struct {
	areas    []*area
	runs     []run
	proc     *procInfo
	auxv     []byte
	exeID    uint32
	cwdID    uint32
	rootID   uint32
	rlimits  [16]unix.Rlimit
	persona  uint32
	oomAdj   int
	vdsoHash string
	cmdline  string
}

func (p *process) collect() (*snapshot, error) {
	s := &snapshot{}
	var err error
	pidDir := "/proc/" + strconv.Itoa(p.pid)
	if p.stat, err = procfs.StatPid(p.pid); err != nil {
		return nil, err
	}
	maps, err := procfs.SmapsPid(p.pid)
	if err != nil {
		return nil, err
	}
	p.smaps = maps
	if err := p.findSyscallIP(maps); err != nil {
		return nil, err
	}
	if s.areas, err = p.classify(maps); err != nil {
		return nil, err
	}
	for _, a := range s.areas {
		if a.m.Kind == procfs.KindVdso {
			if s.vdsoHash, err = p.hashMapping(a.m); err != nil {
				return nil, err
			}
		}
	}
	// Once the vdso is hashed; gone before the stacks are put back below.
	p.installTrampoline(maps)
	defer p.removeTrampoline()
	p.areas = s.areas
	if p.pagemap, err = os.Open(pidDir + "/pagemap"); err != nil {
		return nil, fmt.Errorf("open pagemap of %d: %w", p.pid, err)
	}
	p.closers = append(p.closers, p.pagemap)
	if s.runs, err = p.findRuns(s.areas); err != nil {
		return nil, err
	}
	for _, th := range p.threads {
		if err := p.collectThread(th); err != nil {
			return nil, err
		}
	}
	if s.proc, err = p.collectProcess(); err != nil {
		return nil, err
	}
	if err := p.collectReports(); err != nil {
		return nil, err
	}
	if p.mlockall, err = p.mlockFuture(); err != nil {
		return nil, err
	}
	if err := p.refuseMergeAny(); err != nil {
		return nil, err
	}
	// The injections used stack bytes below each red zone as scratch: put
	// them back before the memory is read, so the image holds the stacks
	// exactly as the program left them.
	if err := p.removeTrampoline(); err != nil {
		return nil, err
	}
	for _, th := range p.threads {
		if err := th.putBackScratch(); err != nil {
			return nil, err
		}
	}
	if s.auxv, err = os.ReadFile(pidDir + "/auxv"); err != nil {
		return nil, fmt.Errorf("auxv of %d: %w", p.pid, err)
	}
	cmd, _ := os.ReadFile(pidDir + "/cmdline")
	s.cmdline = strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
	for _, l := range []struct {
		name string
		id   *uint32
		flag uint32
	}{{"exe", &s.exeID, unix.O_RDONLY}, {"cwd", &s.cwdID, unix.O_RDONLY | unix.O_DIRECTORY}, {"root", &s.rootID, unix.O_RDONLY | unix.O_DIRECTORY}} {
		path := pidDir + "/" + l.name
		link, err := os.Readlink(path)
		if err != nil {
			return nil, fmt.Errorf("%s of %d: %w", l.name, p.pid, err)
		}
		if *l.id, err = p.files.ByPath(p.pid, l.name, link, l.flag, func() (*os.File, error) { return os.Open(path) }); err != nil {
			return nil, err
		}
	}
	if p.fds, err = p.files.DumpFds(p.pid); err != nil {
		return nil, err
	}
	if err := readRlimits(p.pid, &s.rlimits); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(pidDir + "/personality"); err == nil {
		v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32)
		s.persona = uint32(v)
	}
	if b, err := os.ReadFile(pidDir + "/oom_score_adj"); err == nil {
		s.oomAdj, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return s, nil
}

// installTrampoline gives the process cryo's return trampoline (package
// inject, tramp_amd64.go), through which every later injection returns the
// thread to its own registers if cryo dies mid-call. A process whose vdso
// has no room for it is injected through the vdso alone, as before: the
// log says so.
func (p *process) installTrampoline(maps []procfs.Mapping) {
	for _, m := range maps {
		if m.Kind != procfs.KindVdso {
			continue
		}
		b := make([]byte, m.Len())
		err := ptrace.ReadMem(p.pid, m.Start, b)
		var tr *inject.Trampoline
		if err == nil {
			tr, err = inject.InstallTrampoline(p.pid, m.Start, b)
		}
		if err != nil {
			p.log.Info("no return trampoline: a kill of cryo mid-injection could crash the process", "pid", p.pid, "err", err)
			return
		}
		p.tramp = tr
		for _, th := range p.threads {
			th.t.UseTrampoline(tr)
		}
		return
	}
}

// removeTrampoline puts back what the trampoline took, if the process has
// one.
func (p *process) removeTrampoline() error {
	if p.tramp == nil {
		return nil
	}
	for _, th := range p.threads {
		th.t.UseTrampoline(nil)
	}
	tr := p.tramp
	p.tramp = nil
	return tr.Remove()
}

// findSyscallIP finds a syscall instruction in [vdso] for the injections:
// the vdso is mapped executable in every process and reading it changes
// nothing, unlike writing an instruction into the program's text.
func (p *process) findSyscallIP(maps []procfs.Mapping) error {
	for _, m := range maps {
		if m.Kind != procfs.KindVdso {
			continue
		}
		b := make([]byte, m.Len())
		if err := ptrace.ReadMem(p.pid, m.Start, b); err != nil {
			return fmt.Errorf("read [vdso] of %d: %w", p.pid, err)
		}
		if i := bytes.Index(b, []byte{0x0f, 0x05}); i >= 0 {
			for _, th := range p.threads {
				th.t.SetSyscallIP(m.Start+uint64(i), false)
			}
			return nil
		}
	}
	return fmt.Errorf("process %d has no [vdso] with a syscall instruction to inject through: %w", p.pid, ErrNotSupported)
}

func (p *process) hashMapping(m procfs.Mapping) (string, error) {
	b := make([]byte, m.Len())
	if err := ptrace.ReadMem(p.pid, m.Start, b); err != nil {
		return "", fmt.Errorf("read %s of %d: %w", m.Path, p.pid, err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

// readRlimits reads the resource limits of pid. prlimit(2) on another
// user's process needs CAP_SYS_RESOURCE; /proc/PID/limits shows the same
// values to whoever may read the process, so it is the fallback.
func readRlimits(pid int, out *[16]unix.Rlimit) error {
	var err error
	for r := range out {
		if err = unix.Prlimit(pid, r, nil, &out[r]); err != nil {
			break
		}
	}
	if err == nil {
		return nil
	}
	if ferr := rlimitsFromProc(pid, out); ferr != nil {
		return fmt.Errorf("rlimits of %d: %w (and %w)", pid, err, ferr)
	}
	return nil
}

// rlimitsFromProc is readRlimits's fallback, through /proc/PID/limits.
func rlimitsFromProc(pid int, out *[16]unix.Rlimit) error {
	ls, err := procfs.LimitsPid(pid)
	if err != nil {
		return err
	}
	// The image holds RLIM_NLIMITS entries; a kernel listing another
	// number has resources this cryo does not know how to put back.
	if len(ls) != len(out) {
		return fmt.Errorf("/proc/%d/limits: %d limits, want %d", pid, len(ls), len(out))
	}
	for r, l := range ls {
		out[r] = unix.Rlimit{Cur: l.Cur, Max: l.Max}
	}
	return nil
}

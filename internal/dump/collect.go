package dump

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
)

// snapshot is everything read from the frozen process, ready to be written.
type snapshot struct {
	areas   []*area
	runs    []run
	proc    *procInfo
	auxv    []byte
	exeID   uint32
	cwdID   uint32
	rootID  uint32
	rlimits [16]unix.Rlimit
	persona uint32
	oomAdj  int
	seccomp [][]byte // filters of the leader, most recent first
	// seccompIdx is the index in seccomp.img of the newest filter.
	seccompIdx uint32
	vdsoHash   string
	cmdline    string
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
	// The injections used stack bytes below each red zone as scratch: put
	// them back before the memory is read, so the image holds the stacks
	// exactly as the program left them.
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
	if p.status.Seccomp == 2 {
		if s.seccomp, err = seccompFilters(p.pid); err != nil {
			return nil, err
		}
	}
	return s, nil
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
	b, ferr := procfs.ReadFileBounded(fmt.Sprintf("/proc/%d/limits", pid), 64<<10)
	if ferr != nil {
		return fmt.Errorf("rlimits of %d: %w (and %s: %w)", pid, err, "/proc/PID/limits", ferr)
	}
	if err := parseLimits(b, out); err != nil {
		return fmt.Errorf("/proc/%d/limits: %w", pid, err)
	}
	return nil
}

// parseLimits parses /proc/PID/limits: a header, then one line per resource
// in RLIMIT_* order.
func parseLimits(b []byte, out *[16]unix.Rlimit) error {
	var err error
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(out)+1 {
		return fmt.Errorf("%d limits, want %d", len(lines)-1, len(out))
	}
	// "Max cpu time              unlimited            unlimited            seconds"
	// The name is padded to 26 columns; the two values follow.
	for i, line := range lines[1:] {
		if len(line) < 26 {
			return fmt.Errorf("short line %q", line)
		}
		f := strings.Fields(line[26:])
		if len(f) < 2 {
			return fmt.Errorf("bad line %q", line)
		}
		for j, v := range f[:2] {
			n := uint64(unix.RLIM_INFINITY)
			if v != "unlimited" {
				if n, err = strconv.ParseUint(v, 10, 64); err != nil {
					return fmt.Errorf("bad value %q", v)
				}
			}
			if j == 0 {
				out[i].Cur = n
			} else {
				out[i].Max = n
			}
		}
	}
	return nil
}

package procfs

import (
	"bytes"
	"fmt"
	"time"
)

// Stat is /proc/PID/stat or /proc/PID/task/TID/stat, field by field in the
// order of proc(5). Fields after Comm are numbered in comments as in proc(5).
//
// The kernel prints 0 for Startcode, Endcode, Startstack, Kstkesp, Kstkeip,
// Wchan and StartData..EnvEnd unless the reader may ptrace the target; the
// parser reports what was printed.
type Stat struct {
	Pid int // (1)
	// Comm is the command name between the parentheses, unescaped: it may
	// contain blanks, parentheses and even newlines.
	Comm                string // (2)
	State               byte   // (3) e.g. 'R', 'S', 'D', 'T', 't', 'Z', 'X', 'I'
	PPid                int    // (4)
	Pgrp                int    // (5)
	Session             int    // (6)
	TtyNr               int    // (7)
	Tpgid               int    // (8)
	Flags               uint32 // (9) PF_* flags
	Minflt              uint64 // (10)
	Cminflt             uint64 // (11)
	Majflt              uint64 // (12)
	Cmajflt             uint64 // (13)
	Utime               uint64 // (14) clock ticks
	Stime               uint64 // (15)
	Cutime              int64  // (16)
	Cstime              int64  // (17)
	Priority            int64  // (18)
	Nice                int64  // (19)
	NumThreads          int64  // (20)
	Itrealvalue         int64  // (21) always 0 since 2.6.17
	Starttime           uint64 // (22) clock ticks since boot
	Vsize               uint64 // (23) bytes
	Rss                 int64  // (24) pages
	Rsslim              uint64 // (25) bytes
	Startcode           uint64 // (26)
	Endcode             uint64 // (27)
	Startstack          uint64 // (28)
	Kstkesp             uint64 // (29)
	Kstkeip             uint64 // (30)
	Signal              uint64 // (31) obsolete decimal bitmap; use status
	Blocked             uint64 // (32)
	Sigignore           uint64 // (33)
	Sigcatch            uint64 // (34)
	Wchan               uint64 // (35)
	Nswap               uint64 // (36)
	Cnswap              uint64 // (37)
	ExitSignal          int    // (38)
	Processor           int    // (39)
	RtPriority          uint32 // (40)
	Policy              uint32 // (41)
	DelayacctBlkioTicks uint64 // (42)
	GuestTime           uint64 // (43)
	CguestTime          int64  // (44)
	StartData           uint64 // (45)
	EndData             uint64 // (46)
	StartBrk            uint64 // (47)
	ArgStart            uint64 // (48)
	ArgEnd              uint64 // (49)
	EnvStart            uint64 // (50)
	EnvEnd              uint64 // (51)
	ExitCode            int    // (52)

	// NumFields is how many fields the kernel printed: 52 since Linux 3.5.
	// Fields past NumFields are zero. Fields past 52 (a newer kernel's)
	// are counted but not kept.
	NumFields int
}

// ParseStat parses /proc/PID/stat or /proc/PID/task/TID/stat.
func ParseStat(data []byte) (*Stat, error) { return parseStat("stat", data) }

// StatPid reads and parses /proc/PID/stat.
func StatPid(pid int) (*Stat, error) {
	return readParse(procPath(pid, "stat"), MaxSmallFileSize, parseStat)
}

// TaskStatPid reads and parses /proc/PID/task/TID/stat.
func TaskStatPid(pid, tid int) (*Stat, error) {
	return readParse(taskPath(pid, tid, "stat"), MaxSmallFileSize, parseStat)
}

func parseStat(file string, data []byte) (*Stat, error) {
	errAt := func(off int, format string, args ...any) error {
		return &ParseError{File: file, Line: 1, Offset: int64(off), Err: fmt.Errorf(format, args...)}
	}
	if len(data) > MaxSmallFileSize {
		return nil, errAt(0, "%d bytes, over the %d-byte limit: %w", len(data), MaxSmallFileSize, ErrTooLarge)
	}
	open := bytes.IndexByte(data, '(')
	// comm is chosen by the process and may contain ')', so the field
	// ends at the last ')' in the file: nothing after comm can contain one.
	closeP := bytes.LastIndexByte(data, ')')
	if open < 0 || closeP < open {
		return nil, errAt(0, "no (comm) in %s", quote(data))
	}
	s := &Stat{}
	pid, ok := parseInt32(trimSpace(data[:open]))
	if !ok {
		return nil, errAt(0, "bad pid %s", quote(data[:open]))
	}
	s.Pid = int(pid)
	s.Comm = string(data[open+1 : closeP])
	s.NumFields = 2

	rest := data[closeP+1:]
	if len(rest) > 0 && rest[len(rest)-1] == '\n' {
		rest = rest[:len(rest)-1]
	}
	off := closeP + 1
	for len(rest) > 0 {
		if rest[0] != ' ' {
			return nil, errAt(off, "expected a blank before field %d, found %s", s.NumFields+1, quote(rest))
		}
		rest = rest[1:]
		off++
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		f := rest[:i]
		s.NumFields++
		if err := s.setField(s.NumFields, f); err != nil {
			return nil, errAt(off, "field %d: %v %s", s.NumFields, err, quote(f))
		}
		rest = rest[i:]
		off += i
	}
	if s.NumFields < 3 {
		return nil, errAt(off, "missing state after comm")
	}
	return s, nil
}

type statError string

func (e statError) Error() string { return string(e) }

const (
	errBadNumber statError = "bad number"
	errBadState  statError = "bad state"
)

func (s *Stat) setField(n int, f []byte) error {
	if n == 3 {
		if len(f) != 1 {
			return errBadState
		}
		s.State = f[0]
		return nil
	}
	var (
		i   int64
		u   uint64
		ok  bool
		i32 int32
		u32 uint32
	)
	// One parse per destination type; the kernel prints each field with
	// the C type recorded here (fs/proc/array.c do_task_stat).
	switch n {
	case 4, 5, 6, 7, 8, 38, 39, 52:
		i32, ok = parseInt32(f)
	case 9, 40, 41:
		u32, ok = parseUint32(f, 10)
	case 16, 17, 18, 19, 20, 21, 24, 44:
		i, ok = parseInt(f)
	default:
		u, ok = parseUint(f, 10)
	}
	if !ok {
		return errBadNumber
	}
	switch n {
	case 4:
		s.PPid = int(i32)
	case 5:
		s.Pgrp = int(i32)
	case 6:
		s.Session = int(i32)
	case 7:
		s.TtyNr = int(i32)
	case 8:
		s.Tpgid = int(i32)
	case 9:
		s.Flags = u32
	case 10:
		s.Minflt = u
	case 11:
		s.Cminflt = u
	case 12:
		s.Majflt = u
	case 13:
		s.Cmajflt = u
	case 14:
		s.Utime = u
	case 15:
		s.Stime = u
	case 16:
		s.Cutime = i
	case 17:
		s.Cstime = i
	case 18:
		s.Priority = i
	case 19:
		s.Nice = i
	case 20:
		s.NumThreads = i
	case 21:
		s.Itrealvalue = i
	case 22:
		s.Starttime = u
	case 23:
		s.Vsize = u
	case 24:
		s.Rss = i
	case 25:
		s.Rsslim = u
	case 26:
		s.Startcode = u
	case 27:
		s.Endcode = u
	case 28:
		s.Startstack = u
	case 29:
		s.Kstkesp = u
	case 30:
		s.Kstkeip = u
	case 31:
		s.Signal = u
	case 32:
		s.Blocked = u
	case 33:
		s.Sigignore = u
	case 34:
		s.Sigcatch = u
	case 35:
		s.Wchan = u
	case 36:
		s.Nswap = u
	case 37:
		s.Cnswap = u
	case 38:
		s.ExitSignal = int(i32)
	case 39:
		s.Processor = int(i32)
	case 40:
		s.RtPriority = u32
	case 41:
		s.Policy = u32
	case 42:
		s.DelayacctBlkioTicks = u
	case 43:
		s.GuestTime = u
	case 44:
		s.CguestTime = i
	case 45:
		s.StartData = u
	case 46:
		s.EndData = u
	case 47:
		s.StartBrk = u
	case 48:
		s.ArgStart = u
	case 49:
		s.ArgEnd = u
	case 50:
		s.EnvStart = u
	case 51:
		s.EnvEnd = u
	case 52:
		s.ExitCode = int(i32)
	}
	return nil
}

// WaitStopped polls thread tid of pid until /proc shows it stopped (T),
// gone (Z, X, or no longer there) or deadline passes; it returns the last
// state seen and whether it ended stopped or gone. A group-stopped thread
// that its tracer lets go is woken by the kernel and stops again at once,
// before any code of its own: this waits for that.
func WaitStopped(pid, tid int, deadline time.Time) (byte, bool) {
	for {
		st, err := TaskStatPid(pid, tid)
		if err != nil {
			return 0, true
		}
		switch st.State {
		case 'T', 'Z', 'X':
			return st.State, true
		}
		if time.Now().After(deadline) {
			return st.State, false
		}
		time.Sleep(100 * time.Microsecond)
	}
}

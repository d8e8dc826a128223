package procfs

import "bytes"

// Status is /proc/PID/status (or /proc/PID/task/TID/status). Typed fields
// cover what cryo's dump needs; Fields holds every line as printed,
// including those, so a key this package does not know is still available.
type Status struct {
	// Name is the comm, with the kernel's escapes (\n and \\) undone.
	Name string
	// Umask is the file mode creation mask; -1 if the kernel did not
	// print one (before 4.7).
	Umask int
	// State is the state letter; StateName the whole text, e.g.
	// "S (sleeping)".
	State     byte
	StateName string
	Tgid      int
	Ngid      int
	Pid       int
	PPid      int
	TracerPid int
	// Uid and Gid are real, effective, saved set, and filesystem ids.
	Uid [4]uint32
	Gid [4]uint32
	// FDSize is the number of slots in the fd table.
	FDSize int
	Groups []uint32
	// NStgid..NSsid list the id in each pid namespace, outermost first.
	NStgid []int
	NSpid  []int
	NSpgid []int
	NSsid  []int
	// Kthread is true for kernel threads (6.x; earlier kernels omit the
	// line, see Stat.Flags & PF_KTHREAD).
	Kthread bool
	Threads int
	// SigQ is queued signals / RLIMIT_SIGPENDING of the real uid.
	SigQueued, SigQueueLimit uint64
	SigPnd, ShdPnd, SigBlk   uint64
	SigIgn, SigCgt           uint64
	CapInh, CapPrm, CapEff   uint64
	CapBnd, CapAmb           uint64
	NoNewPrivs               bool
	// Seccomp is the mode: 0 disabled, 1 strict, 2 filter.
	Seccomp        int
	SeccompFilters int
	// SpeculationStoreBypass and SpeculationIndirectBranch are the
	// mitigation state as printed, e.g. "thread vulnerable".
	SpeculationStoreBypass    string
	SpeculationIndirectBranch string

	// Fields maps every key to its value with surrounding blanks removed.
	Fields map[string]string
}

// ParseStatus parses /proc/PID/status. Unknown keys are kept in Fields;
// lines without a colon are malformed.
func ParseStatus(data []byte) (*Status, error) { return parseStatus("status", data) }

// StatusPid reads and parses /proc/PID/status.
func StatusPid(pid int) (*Status, error) {
	return readParse(procPath(pid, "status"), MaxSmallFileSize, parseStatus)
}

// TaskStatusPid reads and parses /proc/PID/task/TID/status.
func TaskStatusPid(pid, tid int) (*Status, error) {
	return readParse(taskPath(pid, tid, "status"), MaxSmallFileSize, parseStatus)
}

// maxStatusFields bounds the Fields map. The kernel prints about 60 keys;
// a limit well above that keeps a hostile input from building a huge map.
const maxStatusFields = 512

// maxIDList bounds Groups and the NS* lists. NGROUPS_MAX is 65536; pid
// namespaces nest at most 32 deep.
const maxIDList = 65536

// KB returns the value of a "Key:\t1234 kB" field (VmRSS, VmSwap, ...) in
// bytes.
func (s *Status) KB(key string) (uint64, bool) {
	v, ok := s.Fields[key]
	if !ok {
		return 0, false
	}
	return parseKB([]byte(v))
}

func parseStatus(file string, data []byte) (*Status, error) {
	s := &Status{Umask: -1, Fields: make(map[string]string, 64)}
	l := newLines(file, data, MaxStatusLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if len(line) == 0 {
			continue
		}
		key, val, ok := splitKey(line)
		if !ok {
			return nil, l.errf("no ':' in %s", quote(line))
		}
		if len(s.Fields) >= maxStatusFields {
			return nil, l.errf("more than %d keys: %w", maxStatusFields, ErrTooLarge)
		}
		if err := s.set(&l, key, val); err != nil {
			return nil, err
		}
		s.Fields[string(key)] = string(val)
	}
	if _, ok := s.Fields["Pid"]; !ok {
		return nil, &ParseError{File: file, Line: l.lineNo, Offset: int64(len(data)), Err: errString("no Pid line")}
	}
	return s, nil
}

type errString string

func (e errString) Error() string { return string(e) }

func (s *Status) set(l *lines, key, val []byte) error {
	var ok bool
	bad := func() error { return l.errf("bad %s value %s", key, quote(val)) }
	switch string(key) {
	case "Name":
		s.Name = unescapeComm(val)
		return nil
	case "Umask":
		var v uint64
		if v, ok = parseUint(val, 8); !ok || v > 0o7777 {
			return bad()
		}
		s.Umask = int(v)
		return nil
	case "State":
		if len(val) == 0 {
			return bad()
		}
		s.State, s.StateName = val[0], string(val)
		return nil
	case "Tgid":
		return setInt(&s.Tgid, val, bad)
	case "Ngid":
		return setInt(&s.Ngid, val, bad)
	case "Pid":
		return setInt(&s.Pid, val, bad)
	case "PPid":
		return setInt(&s.PPid, val, bad)
	case "TracerPid":
		return setInt(&s.TracerPid, val, bad)
	case "FDSize":
		return setInt(&s.FDSize, val, bad)
	case "Threads":
		return setInt(&s.Threads, val, bad)
	case "Seccomp":
		return setInt(&s.Seccomp, val, bad)
	case "Seccomp_filters":
		return setInt(&s.SeccompFilters, val, bad)
	case "Uid", "Gid":
		dst := &s.Uid
		if key[0] == 'G' {
			dst = &s.Gid
		}
		rest := val
		for i := range dst {
			var f []byte
			f, rest = nextField(rest)
			if dst[i], ok = parseUint32(f, 10); !ok {
				return bad()
			}
		}
		if len(trimSpace(rest)) != 0 {
			return bad()
		}
		return nil
	case "Groups":
		g, err := parseIDList(val, bad, func(b []byte) (uint32, bool) { return parseUint32(b, 10) })
		s.Groups = g
		return err
	case "NStgid", "NSpid", "NSpgid", "NSsid":
		ids, err := parseIDList(val, bad, func(b []byte) (int, bool) {
			v, ok := parseInt32(b)
			return int(v), ok
		})
		switch string(key) {
		case "NStgid":
			s.NStgid = ids
		case "NSpid":
			s.NSpid = ids
		case "NSpgid":
			s.NSpgid = ids
		default:
			s.NSsid = ids
		}
		return err
	case "Kthread":
		v, ok := parseUint(val, 10)
		if !ok || v > 1 {
			return bad()
		}
		s.Kthread = v == 1
		return nil
	case "NoNewPrivs":
		v, ok := parseUint(val, 10)
		if !ok || v > 1 {
			return bad()
		}
		s.NoNewPrivs = v == 1
		return nil
	case "SigQ":
		i := bytes.IndexByte(val, '/')
		if i < 0 {
			return bad()
		}
		var ok1, ok2 bool
		s.SigQueued, ok1 = parseUint(val[:i], 10)
		s.SigQueueLimit, ok2 = parseUint(val[i+1:], 10)
		if !ok1 || !ok2 {
			return bad()
		}
		return nil
	case "SigPnd":
		return setHex(&s.SigPnd, val, bad)
	case "ShdPnd":
		return setHex(&s.ShdPnd, val, bad)
	case "SigBlk":
		return setHex(&s.SigBlk, val, bad)
	case "SigIgn":
		return setHex(&s.SigIgn, val, bad)
	case "SigCgt":
		return setHex(&s.SigCgt, val, bad)
	case "CapInh":
		return setHex(&s.CapInh, val, bad)
	case "CapPrm":
		return setHex(&s.CapPrm, val, bad)
	case "CapEff":
		return setHex(&s.CapEff, val, bad)
	case "CapBnd":
		return setHex(&s.CapBnd, val, bad)
	case "CapAmb":
		return setHex(&s.CapAmb, val, bad)
	case "Speculation_Store_Bypass":
		s.SpeculationStoreBypass = string(val)
	case "SpeculationIndirectBranch":
		s.SpeculationIndirectBranch = string(val)
	}
	return nil
}

func setInt(dst *int, val []byte, bad func() error) error {
	v, ok := parseInt32(val)
	if !ok {
		return bad()
	}
	*dst = int(v)
	return nil
}

func setHex(dst *uint64, val []byte, bad func() error) error {
	v, ok := parseUint(val, 16)
	if !ok {
		return bad()
	}
	*dst = v
	return nil
}

func parseIDList[T any](val []byte, bad func() error, parse func([]byte) (T, bool)) ([]T, error) {
	var out []T
	for {
		var f []byte
		f, val = nextField(val)
		if len(f) == 0 {
			return out, nil
		}
		if len(out) >= maxIDList {
			return nil, bad()
		}
		v, ok := parse(f)
		if !ok {
			return nil, bad()
		}
		out = append(out, v)
	}
}

// unescapeComm undoes the escaping status applies to Name: the kernel
// (proc_task_name with escape) turns '\n' into `\n` and '\' into `\\`, so
// that a comm cannot forge another status line.
func unescapeComm(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			switch b[i+1] {
			case 'n':
				out = append(out, '\n')
				i++
				continue
			case '\\':
				out = append(out, '\\')
				i++
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}

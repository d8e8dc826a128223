package procfs

import (
	"bytes"
	"strconv"
)

// Kind classifies a mapping by the name the kernel printed for it.
type Kind uint8

const (
	// KindAnon is an anonymous mapping with no name.
	KindAnon Kind = iota
	// KindFile is backed by a file. This includes shared anonymous memory,
	// which the kernel backs with shmem and prints as "/dev/zero (deleted)",
	// and memfds ("/memfd:NAME (deleted)").
	KindFile
	KindHeap       // [heap]
	KindStack      // [stack]
	KindVdso       // [vdso]
	KindVvar       // [vvar]
	KindVvarVclock // [vvar_vclock] (6.13+, x86 since the vDSO rework)
	KindVsyscall   // [vsyscall]
	KindUprobes    // [uprobes]
	// KindAnonNamed is a private anonymous mapping named with
	// prctl(PR_SET_VMA_ANON_NAME): [anon:NAME].
	KindAnonNamed
	// KindAnonShmemNamed is a shared anonymous mapping named with
	// prctl(PR_SET_VMA_ANON_NAME): [anon_shmem:NAME].
	KindAnonShmemNamed
	// KindSpecial is any other bracketed name: [stack:TID] of kernels
	// before 4.5, arm's [vectors] and [sigpage], [rollup] in smaps_rollup,
	// or a name added by a newer kernel.
	KindSpecial
)

var kindNames = [...]string{
	KindAnon:           "anon",
	KindFile:           "file",
	KindHeap:           "heap",
	KindStack:          "stack",
	KindVdso:           "vdso",
	KindVvar:           "vvar",
	KindVvarVclock:     "vvar_vclock",
	KindVsyscall:       "vsyscall",
	KindUprobes:        "uprobes",
	KindAnonNamed:      "anon-named",
	KindAnonShmemNamed: "anon_shmem-named",
	KindSpecial:        "special",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Perms are the four permission characters of a maps line.
type Perms struct {
	Read, Write, Exec bool
	// Shared is the kernel's 's' (VM_MAYSHARE): set for every MAP_SHARED
	// mapping, even of a file opened read-only, for which the kernel
	// clears the VmFlags "sh" bit (VM_SHARED).
	Shared bool
	// Raw is the text as printed, e.g. "rw-p".
	Raw string
}

// Dev is a device number as major and minor.
type Dev struct {
	Major, Minor uint32
}

func (d Dev) String() string {
	return strconv.FormatUint(uint64(d.Major), 10) + ":" + strconv.FormatUint(uint64(d.Minor), 10)
}

// Mapping is one VMA from /proc/PID/maps or /proc/PID/smaps. The smaps-only
// fields are zero when parsed from maps. All sizes are in bytes.
type Mapping struct {
	Start, End uint64
	Perms      Perms
	Offset     uint64
	Dev        Dev
	Inode      uint64
	Kind       Kind

	// RawPath is the name exactly as printed: kernel escapes and any
	// " (deleted)" suffix included.
	RawPath string
	// Path is RawPath without the " (deleted)" suffix and with the
	// kernel's "\012" escape turned back into a newline. It is set for
	// every kind (e.g. "[heap]"), not only KindFile.
	//
	// The kernel escapes nothing but '\n', so a file whose name contains
	// the four characters `\012` reads back as one with a newline; the
	// format cannot tell them apart.
	Path string
	// Deleted reports that the name ended in " (deleted)", which the
	// kernel appends for an unlinked file. It is a hint, not proof: a file
	// may really be named "x (deleted)". Confirm through
	// /proc/PID/map_files before acting on it.
	Deleted bool
	// AnonName is NAME for KindAnonNamed and KindAnonShmemNamed.
	AnonName string

	Size           uint64
	KernelPageSize uint64
	MMUPageSize    uint64
	Rss            uint64
	Pss            uint64
	PssDirty       uint64
	SharedClean    uint64
	SharedDirty    uint64
	PrivateClean   uint64
	PrivateDirty   uint64
	Referenced     uint64
	Anonymous      uint64
	KSM            uint64
	LazyFree       uint64
	AnonHugePages  uint64
	ShmemPmdMapped uint64
	FilePmdMapped  uint64
	SharedHugetlb  uint64
	PrivateHugetlb uint64
	Swap           uint64
	SwapPss        uint64
	Locked         uint64
	THPEligible    bool
	// ProtectionKey is the pkey, or -1 when the kernel printed none (no
	// pkeys support, or parsed from maps).
	ProtectionKey int

	VmFlags VmFlags
	// UnknownVmFlags lists mnemonics this package does not know, in order.
	UnknownVmFlags []string
	// RawVmFlags is the "VmFlags:" value as printed, so nothing a newer
	// kernel adds is lost.
	RawVmFlags string
}

// Len returns End-Start.
func (m *Mapping) Len() uint64 { return m.End - m.Start }

// Contains reports whether addr lies in [Start, End).
func (m *Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// ParseMaps parses the contents of /proc/PID/maps.
func ParseMaps(data []byte) ([]Mapping, error) { return parseMaps("maps", data, false) }

// ParseSmaps parses the contents of /proc/PID/smaps. Keys it does not know
// are skipped, so that a newer kernel's additions do not break it.
func ParseSmaps(data []byte) ([]Mapping, error) { return parseMaps("smaps", data, true) }

// MapsPid reads and parses /proc/PID/maps.
func MapsPid(pid int) ([]Mapping, error) {
	p := procPath(pid, "maps")
	data, err := ReadFileBounded(p, MaxMapsSize)
	if err != nil {
		return nil, err
	}
	return parseMaps(p, data, false)
}

// SmapsPid reads and parses /proc/PID/smaps. The kernel walks page tables
// to produce it, so it costs far more than maps.
func SmapsPid(pid int) ([]Mapping, error) {
	p := procPath(pid, "smaps")
	data, err := ReadFileBounded(p, MaxMapsSize)
	if err != nil {
		return nil, err
	}
	return parseMaps(p, data, true)
}

// MaxMappings bounds the mappings of one process. The kernel caps them at
// vm.max_map_count (65530 by default; databases raise it to ~262144).
const MaxMappings = 1 << 20

// internCap bounds the per-parse string intern table.
const internCap = 1024

func parseMaps(file string, data []byte, smaps bool) ([]Mapping, error) {
	// Preallocate from a count of entries, but never more than real
	// entries could fill: the kernel's maps lines are >= 40 bytes and its
	// smaps entries >= 500, so a file of blank lines cannot make us
	// allocate hundreds of bytes per input byte before failing.
	var n int
	if smaps {
		n = min(bytes.Count(data, []byte("\nVmFlags:"))+1, len(data)/500+1)
	} else {
		n = min(bytes.Count(data, []byte{'\n'})+1, len(data)/40+1)
	}
	out := make([]Mapping, 0, min(n, MaxMappings))
	// Most VmFlags lines and many paths repeat; sharing their strings
	// saves an allocation per mapping when scanning many processes.
	intern := make(map[string]string)
	l := newLines(file, data, MaxLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if smaps {
			if key, val, ok := smapsKeyLine(line); ok {
				if len(out) == 0 {
					return nil, l.errf("%s before the first mapping header", quote(line))
				}
				if err := parseSmapsKey(&l, &out[len(out)-1], key, val, intern); err != nil {
					return nil, err
				}
				continue
			}
		}
		if len(out) >= MaxMappings {
			return nil, l.errf("more than %d mappings: %w", MaxMappings, ErrTooLarge)
		}
		var prev *Mapping
		if len(out) > 0 {
			prev = &out[len(out)-1]
		}
		out = append(out, Mapping{ProtectionKey: -1})
		if err := parseMapsHeader(&l, &out[len(out)-1], line, prev); err != nil {
			return nil, err
		}
	}
}

// smapsKeyLine tells "Rss:   4 kB" from a mapping header, whose first
// word is "start-end" and never ends in ':', and splits it.
func smapsKeyLine(line []byte) (key, val []byte, ok bool) {
	for i, c := range line {
		if c == ' ' || c == '\t' {
			if i > 0 && line[i-1] == ':' {
				return line[:i-1], trimSpace(line[i:]), true
			}
			return nil, nil, false
		}
	}
	if len(line) > 0 && line[len(line)-1] == ':' {
		return line[:len(line)-1], nil, true
	}
	return nil, nil, false
}

var permStrings = func() (t [16]string) {
	for i := range t {
		b := []byte("---p")
		if i&1 != 0 {
			b[0] = 'r'
		}
		if i&2 != 0 {
			b[1] = 'w'
		}
		if i&4 != 0 {
			b[2] = 'x'
		}
		if i&8 != 0 {
			b[3] = 's'
		}
		t[i] = string(b)
	}
	return t
}()

func parsePerms(b []byte) (Perms, bool) {
	if len(b) != 4 {
		return Perms{}, false
	}
	var p Perms
	var idx int
	switch b[0] {
	case 'r':
		p.Read, idx = true, idx|1
	case '-':
	default:
		return Perms{}, false
	}
	switch b[1] {
	case 'w':
		p.Write, idx = true, idx|2
	case '-':
	default:
		return Perms{}, false
	}
	switch b[2] {
	case 'x':
		p.Exec, idx = true, idx|4
	case '-':
	default:
		return Perms{}, false
	}
	switch b[3] {
	case 's':
		p.Shared, idx = true, idx|8
	case 'p':
	default:
		return Perms{}, false
	}
	p.Raw = permStrings[idx]
	return p, true
}

const deletedSuffix = " (deleted)"

// parseMapsHeader parses
//
//	start-end perms offset major:minor inode [padding] name
//
// The name is everything after the blanks that follow the inode: it may
// contain blanks itself, and the kernel pads the header to a fixed column
// before it.
func parseMapsHeader(l *lines, m *Mapping, line []byte, prev *Mapping) error {
	f, rest := nextField(line)
	dash := bytes.IndexByte(f, '-')
	if dash < 0 {
		return l.errf("bad address range %s", quote(f))
	}
	var ok1, ok2 bool
	m.Start, ok1 = parseUint(f[:dash], 16)
	m.End, ok2 = parseUint(f[dash+1:], 16)
	if !ok1 || !ok2 || m.Start > m.End {
		return l.errf("bad address range %s", quote(f))
	}
	f, rest = nextField(rest)
	var ok bool
	if m.Perms, ok = parsePerms(f); !ok {
		return l.errf("bad permissions %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.Offset, ok = parseUint(f, 16); !ok {
		return l.errf("bad offset %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.Dev, ok = parseDev(f, 16); !ok {
		return l.errf("bad device %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.Inode, ok = parseUint(f, 10); !ok {
		return l.errf("bad inode %s", quote(f))
	}
	name := rest
	for len(name) > 0 && isSpace(name[0]) {
		name = name[1:]
	}
	if len(name) == 0 {
		m.Kind = KindAnon
		return nil
	}
	if prev != nil && prev.RawPath == string(name) {
		// Consecutive mappings of one file (an ELF's segments) share
		// their strings.
		m.RawPath, m.Path, m.Deleted, m.Kind, m.AnonName = prev.RawPath, prev.Path, prev.Deleted, prev.Kind, prev.AnonName
		return nil
	}
	m.RawPath = string(name)
	m.Path = m.RawPath
	if name[0] == '[' {
		m.Kind = specialKind(name)
		switch m.Kind {
		case KindAnonNamed:
			m.AnonName = m.RawPath[len("[anon:") : len(m.RawPath)-1]
		case KindAnonShmemNamed:
			m.AnonName = m.RawPath[len("[anon_shmem:") : len(m.RawPath)-1]
		}
		return nil
	}
	m.Kind = KindFile
	if bytes.HasSuffix(name, []byte(deletedSuffix)) {
		m.Deleted = true
		m.Path = m.RawPath[:len(m.RawPath)-len(deletedSuffix)]
	}
	if bytes.Contains(name, []byte(`\012`)) {
		m.Path = string(bytes.ReplaceAll([]byte(m.Path), []byte(`\012`), []byte{'\n'}))
	}
	return nil
}

func specialKind(name []byte) Kind {
	switch string(name) {
	case "[heap]":
		return KindHeap
	case "[stack]":
		return KindStack
	case "[vdso]":
		return KindVdso
	case "[vvar]":
		return KindVvar
	case "[vvar_vclock]":
		return KindVvarVclock
	case "[vsyscall]":
		return KindVsyscall
	case "[uprobes]":
		return KindUprobes
	}
	if name[len(name)-1] == ']' {
		if bytes.HasPrefix(name, []byte("[anon:")) {
			return KindAnonNamed
		}
		if bytes.HasPrefix(name, []byte("[anon_shmem:")) {
			return KindAnonShmemNamed
		}
	}
	return KindSpecial
}

// parseDev parses "major:minor" in the given base: maps prints hex,
// mountinfo decimal.
func parseDev(b []byte, base int) (Dev, bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return Dev{}, false
	}
	ma, ok1 := parseUint32(b[:i], base)
	mi, ok2 := parseUint32(b[i+1:], base)
	return Dev{Major: ma, Minor: mi}, ok1 && ok2
}

func parseSmapsKey(l *lines, m *Mapping, key, val []byte, intern map[string]string) error {
	var dst *uint64
	switch string(key) {
	case "Size":
		dst = &m.Size
	case "KernelPageSize":
		dst = &m.KernelPageSize
	case "MMUPageSize":
		dst = &m.MMUPageSize
	case "Rss":
		dst = &m.Rss
	case "Pss":
		dst = &m.Pss
	case "Pss_Dirty":
		dst = &m.PssDirty
	case "Shared_Clean":
		dst = &m.SharedClean
	case "Shared_Dirty":
		dst = &m.SharedDirty
	case "Private_Clean":
		dst = &m.PrivateClean
	case "Private_Dirty":
		dst = &m.PrivateDirty
	case "Referenced":
		dst = &m.Referenced
	case "Anonymous":
		dst = &m.Anonymous
	case "KSM":
		dst = &m.KSM
	case "LazyFree":
		dst = &m.LazyFree
	case "AnonHugePages":
		dst = &m.AnonHugePages
	case "ShmemPmdMapped":
		dst = &m.ShmemPmdMapped
	case "FilePmdMapped":
		dst = &m.FilePmdMapped
	case "Shared_Hugetlb":
		dst = &m.SharedHugetlb
	case "Private_Hugetlb":
		dst = &m.PrivateHugetlb
	case "Swap":
		dst = &m.Swap
	case "SwapPss":
		dst = &m.SwapPss
	case "Locked":
		dst = &m.Locked
	case "THPeligible":
		v, ok := parseUint(val, 10)
		if !ok || v > 1 {
			return l.errf("bad THPeligible %s", quote(val))
		}
		m.THPEligible = v == 1
		return nil
	case "ProtectionKey":
		v, ok := parseInt32(val)
		if !ok {
			return l.errf("bad ProtectionKey %s", quote(val))
		}
		m.ProtectionKey = int(v)
		return nil
	case "VmFlags":
		m.VmFlags, m.UnknownVmFlags = parseVmFlags(val)
		if s, ok := intern[string(val)]; ok {
			m.RawVmFlags = s
		} else {
			m.RawVmFlags = string(val)
			if len(intern) < internCap {
				intern[m.RawVmFlags] = m.RawVmFlags
			}
		}
		return nil
	default:
		return nil
	}
	v, ok := parseKB(val)
	if !ok {
		return l.errf("bad %s value %s", key, quote(val))
	}
	*dst = v
	return nil
}

// parseKB parses "1234 kB" into bytes.
func parseKB(b []byte) (uint64, bool) {
	num, unit := nextField(b)
	if string(trimSpace(unit)) != "kB" {
		return 0, false
	}
	v, ok := parseUint(num, 10)
	if !ok || v > (1<<64-1)/1024 {
		return 0, false
	}
	return v * 1024, true
}

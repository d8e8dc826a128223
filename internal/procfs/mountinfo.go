package procfs

import (
	"bytes"
	"fmt"
)

// Mount is one line of /proc/PID/mountinfo (fs/proc_namespace.c
// show_mountinfo):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
type Mount struct {
	ID       int // (1) mount id, as in Fdinfo.MntID
	ParentID int // (2)
	Dev      Dev // (3) st_dev of files on this mount (decimal in this file)
	// Root is the path within the filesystem that is mounted (4), and
	// MountPoint where it is mounted relative to the reader's root (5);
	// both with the kernel's octal escapes (\040 for a blank...) undone.
	Root       string
	MountPoint string
	// Options are the per-mount options (6), as printed.
	Options string
	// Optional are the optional fields (7), e.g. "shared:1"; the
	// propagation fields below are decoded from them.
	Optional      []string
	Shared        int    // peer group id of "shared:N", 0 if none
	Master        int    // peer group id of "master:N", 0 if none
	PropagateFrom int    // "propagate_from:N", 0 if none
	Unbindable    bool   // "unbindable"
	FSType        string // (9), unescaped, e.g. "fuse.sshfs"
	Source        string // (10), unescaped; "none" when the kernel has none
	// SuperOptions are the superblock options (11), as printed. Values
	// inside may carry the filesystem's own escapes.
	SuperOptions string
}

// maxOptionalFields bounds the optional fields of a line; the kernel
// prints at most four.
const maxOptionalFields = 16

// ParseMountinfo parses /proc/PID/mountinfo.
func ParseMountinfo(data []byte) ([]Mount, error) { return parseMountinfo("mountinfo", data) }

// MountinfoPid reads and parses /proc/PID/mountinfo: the mounts of pid's
// mount namespace as seen from pid's root.
func MountinfoPid(pid int) ([]Mount, error) {
	return readParse(procPath(pid, "mountinfo"), MaxMountinfoSize, parseMountinfo)
}

func parseMountinfo(file string, data []byte) ([]Mount, error) {
	// A real line is >= 30 bytes; see parseMaps for why the estimate is
	// capped.
	out := make([]Mount, 0, min(bytes.Count(data, []byte{'\n'})+1, len(data)/30+1))
	l := newLines(file, data, MaxLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if len(line) == 0 {
			continue
		}
		m, err := parseMountLine(line)
		if err != nil {
			return nil, l.errf("%v", err)
		}
		out = append(out, m)
	}
}

func parseMountLine(line []byte) (Mount, error) {
	var m Mount
	// Fields are separated by single blanks; every blank inside a field
	// is escaped as \040, so splitting on blanks is exact.
	f, rest := nextField(line)
	id, ok := parseInt32(f)
	if !ok {
		return m, fmt.Errorf("bad mount id %s", quote(f))
	}
	m.ID = int(id)
	f, rest = nextField(rest)
	if id, ok = parseInt32(f); !ok {
		return m, fmt.Errorf("bad parent id %s", quote(f))
	}
	m.ParentID = int(id)
	f, rest = nextField(rest)
	if m.Dev, ok = parseDev(f, 10); !ok {
		return m, fmt.Errorf("bad major:minor %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.Root, ok = unescapeOctal(f); !ok || len(f) == 0 {
		return m, fmt.Errorf("bad root %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.MountPoint, ok = unescapeOctal(f); !ok || len(f) == 0 {
		return m, fmt.Errorf("bad mount point %s", quote(f))
	}
	f, rest = nextField(rest)
	if len(f) == 0 {
		return m, fmt.Errorf("missing mount options")
	}
	m.Options = string(f)
	for {
		f, rest = nextField(rest)
		if len(f) == 0 {
			return m, fmt.Errorf("missing '-' separator")
		}
		if string(f) == "-" {
			break
		}
		if len(m.Optional) >= maxOptionalFields {
			return m, fmt.Errorf("more than %d optional fields: %w", maxOptionalFields, ErrTooLarge)
		}
		opt := string(f)
		m.Optional = append(m.Optional, opt)
		tag, val, hasVal := bytes.Cut(f, []byte{':'})
		var dst *int
		switch string(tag) {
		case "shared":
			dst = &m.Shared
		case "master":
			dst = &m.Master
		case "propagate_from":
			dst = &m.PropagateFrom
		case "unbindable":
			m.Unbindable = true
		}
		if dst != nil {
			v, ok := parseInt32(val)
			if !hasVal || !ok {
				return m, fmt.Errorf("bad optional field %s", quote(f))
			}
			*dst = int(v)
		}
	}
	f, rest = nextField(rest)
	if m.FSType, ok = unescapeOctal(f); !ok || len(f) == 0 {
		return m, fmt.Errorf("bad filesystem type %s", quote(f))
	}
	f, rest = nextField(rest)
	if m.Source, ok = unescapeOctal(f); !ok || len(f) == 0 {
		return m, fmt.Errorf("bad source %s", quote(f))
	}
	f, rest = nextField(rest)
	m.SuperOptions = string(f)
	if f, _ = nextField(rest); len(f) != 0 {
		return m, fmt.Errorf("unexpected trailing field %s", quote(f))
	}
	return m, nil
}

// unescapeOctal undoes the kernel's mangling of paths and names in
// mountinfo (seq_escape, mangle): each byte of " \t\n\\" becomes '\' and
// three octal digits. A backslash that does not start such a sequence
// cannot come from the kernel, since '\' itself is escaped.
func unescapeOctal(b []byte) (string, bool) {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b), true
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		if i+4 > len(b) {
			return "", false
		}
		v, ok := parseUint(b[i+1:i+4], 8)
		if !ok || v > 0xff {
			return "", false
		}
		out = append(out, byte(v))
		i += 3
	}
	return string(out), true
}

package procfs

import (
	"bytes"
	"fmt"
)

// Rlimit is one line of /proc/PID/limits: a soft and a hard limit, with
// "unlimited" as RlimInfinity.
type Rlimit struct {
	Cur, Max uint64
}

// RlimInfinity is RLIM_INFINITY, which the kernel prints as "unlimited".
const RlimInfinity = ^uint64(0)

const (
	// limitsNameWidth is the column at which the values start: the
	// kernel prints each name with "%-25s " (fs/proc/base.c
	// proc_pid_limits), and every name it knows is shorter.
	limitsNameWidth = 26
	// maxLimits bounds the lines kept. Linux has 16 (RLIM_NLIMITS); a
	// kernel that added more would still be read, but not without end.
	maxLimits = 64
)

// ParseLimits parses /proc/PID/limits: a header line, then one line per
// resource in RLIMIT_* order (RLIMIT_CPU first), each a name padded to 26
// columns, the soft and the hard limit, and a unit. The result has one
// entry per line, in that order, so that index r is resource r.
//
// /proc/PID/limits is readable by whoever may read the process's status,
// where prlimit(2) on another user's process needs CAP_SYS_RESOURCE: it is
// the way to learn the limits of a process one may trace but not change.
func ParseLimits(data []byte) ([]Rlimit, error) { return parseLimits("limits", data) }

// LimitsPid reads and parses /proc/PID/limits.
func LimitsPid(pid int) ([]Rlimit, error) {
	return readParse(procPath(pid, "limits"), MaxSmallFileSize, parseLimits)
}

func parseLimits(file string, data []byte) ([]Rlimit, error) {
	l := newLines(file, data, MaxLineLen)
	line, ok, err := l.next()
	if err != nil {
		return nil, err
	}
	if !ok || !bytes.HasPrefix(line, []byte("Limit ")) {
		return nil, &ParseError{File: file, Line: 1, Err: fmt.Errorf("no header line")}
	}
	out := []Rlimit{}
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if len(out) == maxLimits {
			return nil, l.errf("more than %d limits: %w", maxLimits, ErrTooLarge)
		}
		// The name may hold spaces ("Max cpu time"), so the values are
		// found by column, not by field.
		if len(line) <= limitsNameWidth || line[limitsNameWidth-1] != ' ' {
			return nil, l.errf("no values after a %d-column name in %s", limitsNameWidth, quote(line))
		}
		var r Rlimit
		rest := line[limitsNameWidth:]
		for _, v := range []*uint64{&r.Cur, &r.Max} {
			var f []byte
			f, rest = nextField(rest)
			n, ok := parseLimit(f)
			if !ok {
				return nil, l.errf("bad limit %s in %s", quote(f), quote(line))
			}
			*v = n
		}
		out = append(out, r)
	}
}

func parseLimit(b []byte) (uint64, bool) {
	if string(b) == "unlimited" {
		return RlimInfinity, true
	}
	return parseUint(b, 10)
}

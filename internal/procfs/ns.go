package procfs

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// TimensOffsets are the clock offsets of a time namespace, as
// /proc/PID/timens_offsets shows those of the process's
// time_for_children namespace: seconds and nanoseconds (0 ≤ ns < 1e9)
// added to the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME.
type TimensOffsets struct {
	MonotonicSec, MonotonicNsec int64
	BoottimeSec, BoottimeNsec   int64
}

// ParseTimensOffsets parses timens_offsets: a line per clock, its name
// (or number: 1 monotonic, 7 boottime), seconds and nanoseconds.
func ParseTimensOffsets(data []byte) (TimensOffsets, error) {
	return parseTimensOffsets("timens_offsets", data)
}

// TimensOffsetsPid reads /proc/PID/timens_offsets.
func TimensOffsetsPid(pid int) (TimensOffsets, error) {
	return readParse("/proc/"+strconv.Itoa(pid)+"/timens_offsets", MaxSysctlSize, parseTimensOffsets)
}

func parseTimensOffsets(file string, data []byte) (TimensOffsets, error) {
	var o TimensOffsets
	l := newLines(file, data, MaxLineLen)
	seen := map[string]bool{}
	for {
		line, ok, err := l.next()
		if err != nil {
			return o, err
		}
		if !ok {
			break
		}
		f := bytes.Fields(line)
		if len(f) != 3 {
			return o, l.errf("want clock, seconds, nanoseconds: %s", quote(line))
		}
		sec, ok1 := parseInt(f[1])
		nsec, ok2 := parseInt(f[2])
		if !ok1 || !ok2 || nsec < 0 || nsec >= 1e9 {
			return o, l.errf("bad offset: %s", quote(line))
		}
		clock := string(f[0])
		switch clock {
		case "monotonic", "1":
			clock = "monotonic"
			o.MonotonicSec, o.MonotonicNsec = sec, nsec
		case "boottime", "7":
			clock = "boottime"
			o.BoottimeSec, o.BoottimeNsec = sec, nsec
		default:
			return o, l.errf("unknown clock %s", quote(f[0]))
		}
		if seen[clock] {
			return o, l.errf("clock %s twice", clock)
		}
		seen[clock] = true
	}
	if !seen["monotonic"] || !seen["boottime"] {
		return o, &ParseError{File: file, Line: 1, Err: fmt.Errorf("want both monotonic and boottime: %s", quote(data))}
	}
	return o, nil
}

// FormatTimensOffsets is what a write to /proc/PID/timens_offsets takes
// to set both offsets (the kernel parses one "clock sec nsec" per line).
func FormatTimensOffsets(o TimensOffsets) []byte {
	return fmt.Appendf(nil, "monotonic %d %d\nboottime %d %d\n", o.MonotonicSec, o.MonotonicNsec, o.BoottimeSec, o.BoottimeNsec)
}

// ParseSysctlInts parses a /proc/sys file that holds a vector of integers
// separated by blanks (kernel.sem: semmsl, semmns, semopm, semmni).
func ParseSysctlInts(data []byte) ([]int64, error) { return parseSysctlInts("sysctl", data) }

// SysctlInts reads the vector sysctl name ("kernel.sem").
func SysctlInts(name string) ([]int64, error) {
	return readParse("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), MaxSysctlSize, parseSysctlInts)
}

func parseSysctlInts(file string, data []byte) ([]int64, error) {
	b := data
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	var out []int64
	for _, f := range bytes.Fields(b) {
		v, ok := parseInt(f)
		if !ok {
			return nil, &ParseError{File: file, Line: 1, Err: fmt.Errorf("not integers: %s", quote(data))}
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Line: 1, Err: fmt.Errorf("no integer: %s", quote(data))}
	}
	return out, nil
}

// ParseSysctlUint parses a /proc/sys file of one unsigned long
// (proc_doulongvec_minmax: kernel.shmmax is near 2^64 by default).
func ParseSysctlUint(data []byte) (uint64, error) { return parseSysctlUint("sysctl", data) }

// SysctlUint reads the unsigned long sysctl name ("kernel.shmmax").
func SysctlUint(name string) (uint64, error) {
	return readParse("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), MaxSysctlSize, parseSysctlUint)
}

func parseSysctlUint(file string, data []byte) (uint64, error) {
	b := data
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	v, ok := parseUint(b, 10)
	if !ok {
		return 0, &ParseError{File: file, Line: 1, Err: fmt.Errorf("not one unsigned integer: %s", quote(data))}
	}
	return v, nil
}

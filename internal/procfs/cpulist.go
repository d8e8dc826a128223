package procfs

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxCPUs bounds a CPU list: the kernel's NR_CPUS is at most 8192.
const MaxCPUs = 8192

// ParseCPUList parses a CPU list as the kernel prints it in
// /sys/devices/system/cpu/online and /proc/PID/status Cpus_allowed_list
// ("0-3,8,10-11"; empty for none) into a mask, 64 CPUs a word. A CPU at or
// above MaxCPUs is malformed, so the mask never takes more than 1 KiB.
func ParseCPUList(s string) ([]uint64, error) {
	var m []uint64
	if s == "" {
		return m, nil
	}
	off := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := cpuNumber(lo)
		if err != nil {
			return nil, cpuListError(part, off, err)
		}
		b := a
		if isRange {
			if b, err = cpuNumber(hi); err != nil {
				return nil, cpuListError(part, off, err)
			}
			if b < a {
				return nil, cpuListError(part, off, fmt.Errorf("range ends before it starts"))
			}
		}
		for len(m) <= b/64 {
			m = append(m, 0)
		}
		for cpu := a; cpu <= b; cpu++ {
			m[cpu/64] |= 1 << (cpu % 64)
		}
		off += len(part) + 1
	}
	return m, nil
}

func cpuNumber(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n >= MaxCPUs {
		return 0, fmt.Errorf("bad CPU number %s", quote([]byte(s)))
	}
	return int(n), nil
}

func cpuListError(part string, off int, err error) error {
	return &ParseError{File: "cpu list", Offset: int64(off), Err: fmt.Errorf("%s: %w", quote([]byte(part)), err)}
}

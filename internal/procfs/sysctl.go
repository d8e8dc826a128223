package procfs

import (
	"fmt"
	"strings"
)

// MaxSysctlSize bounds a /proc/sys file read for one integer: the kernel
// prints it into at most a page.
const MaxSysctlSize = 4 << 10

// ParseSysctlInt parses a /proc/sys file that holds one integer, as the
// kernel's proc_dointvec and proc_douintvec print it: decimal, a '-' for a
// negative value, then a newline. A file of several values (a vector such
// as kernel.printk) is malformed here.
func ParseSysctlInt(data []byte) (int64, error) { return parseSysctlInt("sysctl", data) }

// SysctlInt reads and parses the integer sysctl name, spelled as sysctl(8)
// spells it ("kernel.pid_max" is /proc/sys/kernel/pid_max). A sysctl the
// kernel lacks (Yama not built in) gives an error matching fs.ErrNotExist.
func SysctlInt(name string) (int64, error) {
	return readParse("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), MaxSysctlSize, parseSysctlInt)
}

func parseSysctlInt(file string, data []byte) (int64, error) {
	b := data
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	v, ok := parseInt(b)
	if !ok || (len(b) > 0 && b[0] == '+') {
		return 0, &ParseError{File: file, Line: 1, Err: fmt.Errorf("not one integer: %s", quote(data))}
	}
	return v, nil
}

// BootID is /proc/sys/kernel/random/boot_id: a UUID the kernel draws at
// boot, the same for every reader until the next.
func BootID() (string, error) {
	b, err := ReadFileBounded("/proc/sys/kernel/random/boot_id", 64)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 36 {
		return "", &ParseError{File: "boot_id", Line: 1, Err: fmt.Errorf("not a UUID: %s", quote(b))}
	}
	return id, nil
}

package procfs

import (
	"fmt"
	"os"
	"strconv"
)

// TimerSlack reads a thread's timer slack from /proc/TID/timerslack_ns.
// The file is listed only in a process's own directory, but /proc/TID
// reaches every thread, and it then names that thread's slack. Reading
// another task's needs CAP_SYS_NICE: an error matching fs.ErrPermission
// says it is missing.
func TimerSlack(tid int) (uint64, error) {
	path := fmt.Sprintf("/proc/%d/timerslack_ns", tid)
	v, err := readParse(path, 32, parseSysctlInt)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, &ParseError{File: path, Line: 1, Err: fmt.Errorf("negative slack %d", v)}
	}
	return uint64(v), nil
}

// SetTimerSlack writes a thread's timer slack. Writing 0 gives the thread
// its default slack, the one it was born with, as PR_SET_TIMERSLACK(0)
// does; a real-time thread keeps its 0 whatever is written.
func SetTimerSlack(tid int, ns uint64) error {
	path := fmt.Sprintf("/proc/%d/timerslack_ns", tid)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatUint(ns, 10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

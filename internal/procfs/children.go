package procfs

import "fmt"

// MaxChildrenSize bounds /proc/PID/task/TID/children: PID_MAX_LIMIT (4 Mi)
// pids of at most 7 digits, each followed by a space.
const MaxChildrenSize = 32 << 20

// ParseChildren parses /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN,
// fs/proc/array.c children_seq_show): the pids of the children that thread
// forked and that have not been reaped, each followed by a space. A child
// is listed under the thread that forked it, not under the process, so
// listing a process's children means reading every thread's file.
//
// The list is a snapshot that can be stale the moment it is read unless
// the process is frozen; an empty file is an empty list.
func ParseChildren(data []byte) ([]int, error) { return parseChildren("children", data) }

// TaskChildrenPid reads and parses /proc/PID/task/TID/children. Kernels
// built without CONFIG_PROC_CHILDREN have no such file: the error then
// matches fs.ErrNotExist.
func TaskChildrenPid(pid, tid int) ([]int, error) {
	return readParse(taskPath(pid, tid, "children"), MaxChildrenSize, parseChildren)
}

func parseChildren(file string, data []byte) ([]int, error) {
	out := []int{}
	for off := 0; off < len(data); {
		// The file is one line without a newline: each pid is followed
		// by one space.
		if data[off] == ' ' {
			off++
			continue
		}
		end := off
		for end < len(data) && data[end] != ' ' {
			end++
		}
		// A pid_t is a positive C int, printed in decimal without a sign.
		v, ok := parseUint(data[off:end], 10)
		if !ok || v == 0 || v > 1<<31-1 {
			return nil, &ParseError{File: file, Line: 1, Offset: int64(off), Err: fmt.Errorf("bad pid %s", quote(data[off:end]))}
		}
		out = append(out, int(v))
		off = end
	}
	return out, nil
}

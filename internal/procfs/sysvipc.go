package procfs

import (
	"bytes"
	"fmt"
)

// MaxSysvipcSize bounds a /proc/sysvipc file: about 200 bytes a line, and
// an IPC namespace holds at most kernel.shmmni (4096 by default) segments.
const MaxSysvipcSize = 16 << 20

// ShmSegment is one line of /proc/sysvipc/shm: a System V shared memory
// segment of the reader's IPC namespace (ipc/shm.c, sysvipc_shm_proc_show).
type ShmSegment struct {
	Key int32 // IPC_PRIVATE (0) also for a segment marked for removal
	ID  int32
	// Mode is shm_perm.mode: the permission bits and SHM_DEST (01000),
	// SHM_LOCKED (02000), as the kernel prints them (octal).
	Mode            uint32
	Size            uint64
	Cpid, Lpid      int32
	Nattch          uint64
	UID, GID        uint32
	CUID, CGID      uint32
	Atime, Dtime    int64
	Ctime           int64
	RSS, Swap       uint64
	HasRSS, HasSwap bool
}

// SHM_DEST and SHM_LOCKED are the state bits the kernel keeps in
// shm_perm.mode beside the permissions.
const (
	ShmDest   = 0o1000
	ShmLocked = 0o2000
)

// ParseSysvShm parses /proc/sysvipc/shm. Columns are found by the header's
// names, so a kernel that adds one (rss and swap came in 3.18) still parses.
func ParseSysvShm(data []byte) ([]ShmSegment, error) { return parseSysvShm("sysvipc/shm", data) }

// SysvShm reads /proc/sysvipc/shm: the segments of cryo's own IPC namespace.
func SysvShm() ([]ShmSegment, error) {
	return readParse("/proc/sysvipc/shm", MaxSysvipcSize, parseSysvShm)
}

func parseSysvShm(file string, data []byte) ([]ShmSegment, error) {
	var out []ShmSegment
	err := parseSysvipc(file, data, []string{"key", "shmid", "perms", "size", "nattch", "uid", "gid", "cuid", "cgid"},
		func(col map[string][]byte, l *lines) error {
			var s ShmSegment
			var ok [12]bool
			s.Key, ok[0] = parseInt32(col["key"])
			s.ID, ok[1] = parseInt32(col["shmid"])
			s.Mode, ok[2] = parseUint32(col["perms"], 8)
			s.Size, ok[3] = parseUint(col["size"], 10)
			s.Nattch, ok[4] = parseUint(col["nattch"], 10)
			s.UID, ok[5] = parseUint32(col["uid"], 10)
			s.GID, ok[6] = parseUint32(col["gid"], 10)
			s.CUID, ok[7] = parseUint32(col["cuid"], 10)
			s.CGID, ok[8] = parseUint32(col["cgid"], 10)
			for i, o := range ok[:9] {
				if !o {
					return l.errf("bad field %d: %w", i, ErrMalformed)
				}
			}
			// Informational columns: history, not state; read if present.
			if v, o := parseInt32(col["cpid"]); o {
				s.Cpid = v
			}
			if v, o := parseInt32(col["lpid"]); o {
				s.Lpid = v
			}
			if v, o := parseInt(col["atime"]); o {
				s.Atime = v
			}
			if v, o := parseInt(col["dtime"]); o {
				s.Dtime = v
			}
			if v, o := parseInt(col["ctime"]); o {
				s.Ctime = v
			}
			s.RSS, s.HasRSS = parseUint(col["rss"], 10)
			s.Swap, s.HasSwap = parseUint(col["swap"], 10)
			if s.ID < 0 {
				return l.errf("negative id %d: %w", s.ID, ErrMalformed)
			}
			if len(out) >= 1<<20 {
				return l.errf("too many segments: %w", ErrTooLarge)
			}
			out = append(out, s)
			return nil
		})
	return out, err
}

// parseSysvipc reads a /proc/sysvipc table: a header line of column names,
// then one line of space-separated fields per object. need names the
// columns that must be there.
func parseSysvipc(file string, data []byte, need []string, row func(map[string][]byte, *lines) error) error {
	l := newLines(file, data, 4096)
	hdr, ok, err := l.next()
	if err != nil {
		return err
	}
	if !ok {
		return &ParseError{File: file, Line: 1, Err: fmt.Errorf("no header line: %w", ErrMalformed)}
	}
	names := bytes.Fields(hdr)
	if len(names) > 64 {
		return l.errf("%d columns: %w", len(names), ErrTooLarge)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[string(n)] = true
	}
	for _, n := range need {
		if !have[n] {
			return l.errf("no %q column: %w", n, ErrMalformed)
		}
	}
	col := make(map[string][]byte, len(names))
	for {
		line, ok, err := l.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != len(names) {
			return l.errf("%d fields for %d columns: %w", len(f), len(names), ErrMalformed)
		}
		for i, n := range names {
			col[string(n)] = f[i]
		}
		if err := row(col, &l); err != nil {
			return err
		}
	}
}

// SemSet is one line of /proc/sysvipc/sem (ipc/sem.c, sysvipc_sem_proc_show).
type SemSet struct {
	Key   int32
	ID    int32
	Mode  uint32
	Nsems uint32
}

// MsgQueue is one line of /proc/sysvipc/msg (ipc/msg.c,
// sysvipc_msg_proc_show): LSpid and LRpid are the last sender and receiver.
type MsgQueue struct {
	Key          int32
	ID           int32
	Mode         uint32
	Cbytes, Qnum uint64
	LSpid, LRpid int32
}

// ParseSysvSem parses /proc/sysvipc/sem.
func ParseSysvSem(data []byte) ([]SemSet, error) { return parseSysvSem("sysvipc/sem", data) }

// SysvSem reads /proc/sysvipc/sem: the semaphore sets of cryo's IPC namespace.
func SysvSem() ([]SemSet, error) {
	return readParse("/proc/sysvipc/sem", MaxSysvipcSize, parseSysvSem)
}

func parseSysvSem(file string, data []byte) ([]SemSet, error) {
	var out []SemSet
	err := parseSysvipc(file, data, []string{"key", "semid", "perms", "nsems"}, func(col map[string][]byte, l *lines) error {
		var s SemSet
		var ok [4]bool
		s.Key, ok[0] = parseInt32(col["key"])
		s.ID, ok[1] = parseInt32(col["semid"])
		s.Mode, ok[2] = parseUint32(col["perms"], 8)
		s.Nsems, ok[3] = parseUint32(col["nsems"], 10)
		for i, o := range ok {
			if !o {
				return l.errf("bad field %d: %w", i, ErrMalformed)
			}
		}
		if s.ID < 0 || len(out) >= 1<<20 {
			return l.errf("id %d or too many sets: %w", s.ID, ErrMalformed)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// ParseSysvMsg parses /proc/sysvipc/msg.
func ParseSysvMsg(data []byte) ([]MsgQueue, error) { return parseSysvMsg("sysvipc/msg", data) }

// SysvMsg reads /proc/sysvipc/msg: the message queues of cryo's IPC namespace.
func SysvMsg() ([]MsgQueue, error) {
	return readParse("/proc/sysvipc/msg", MaxSysvipcSize, parseSysvMsg)
}

func parseSysvMsg(file string, data []byte) ([]MsgQueue, error) {
	var out []MsgQueue
	err := parseSysvipc(file, data, []string{"key", "msqid", "perms", "cbytes", "qnum", "lspid", "lrpid"}, func(col map[string][]byte, l *lines) error {
		var q MsgQueue
		var ok [7]bool
		q.Key, ok[0] = parseInt32(col["key"])
		q.ID, ok[1] = parseInt32(col["msqid"])
		q.Mode, ok[2] = parseUint32(col["perms"], 8)
		q.Cbytes, ok[3] = parseUint(col["cbytes"], 10)
		q.Qnum, ok[4] = parseUint(col["qnum"], 10)
		q.LSpid, ok[5] = parseInt32(col["lspid"])
		q.LRpid, ok[6] = parseInt32(col["lrpid"])
		for i, o := range ok {
			if !o {
				return l.errf("bad field %d: %w", i, ErrMalformed)
			}
		}
		if q.ID < 0 || len(out) >= 1<<20 {
			return l.errf("id %d or too many queues: %w", q.ID, ErrMalformed)
		}
		out = append(out, q)
		return nil
	})
	return out, err
}

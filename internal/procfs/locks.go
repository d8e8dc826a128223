package procfs

import (
	"bytes"
	"fmt"
)

// Lock is one line of /proc/locks (fs/locks.c lock_get_status).
type Lock struct {
	// ID is the line's ordinal, which the kernel shares between a lock and
	// the waiters blocked on it.
	ID int64
	// Blocked marks a waiter ("->"): a lock asked for and not granted.
	Blocked bool
	// Kind is FLOCK, POSIX, OFDLCK, LEASE, DELEG or a newer kernel's word.
	Kind string
	// Mode is ADVISORY, MANDATORY, or for a lease ACTIVE, BREAKING,
	// BREAKER.
	Mode string
	// Type is READ, WRITE, UNLCK or NONE.
	Type string
	// Pid is the owner's pid as seen from the reader's pid namespace; -1
	// for locks no process owns (OFD locks, some leases).
	Pid int
	// Dev and Ino name the locked file; NoInode is set when the kernel
	// had none to print ("<none>:0").
	Dev     Dev
	Ino     uint64
	NoInode bool
	// Start and End are the range (End inclusive); ToEOF for "EOF".
	Start, End uint64
	ToEOF      bool
}

// MaxLocksSize bounds /proc/locks: a line is under 100 bytes, and a machine
// with ten million locks is a machine in trouble.
const MaxLocksSize = 1 << 30

// maxLocksLine bounds one line.
const maxLocksLine = 512

// ParseLocks parses /proc/locks.
func ParseLocks(data []byte) ([]Lock, error) { return parseLocks("locks", data) }

// Locks reads and parses /proc/locks.
func Locks() ([]Lock, error) {
	return readParse("/proc/locks", MaxLocksSize, parseLocks)
}

func parseLocks(file string, data []byte) ([]Lock, error) {
	var out []Lock
	l := newLines(file, data, maxLocksLine)
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
		f := bytes.Fields(line)
		var k Lock
		if len(f) < 1 || len(f[0]) < 2 || f[0][len(f[0])-1] != ':' {
			return nil, l.errf("no id in %s", quote(line))
		}
		id, ok := parseUint(f[0][:len(f[0])-1], 10)
		if !ok || id > 1<<62 {
			return nil, l.errf("bad id in %s", quote(line))
		}
		k.ID = int64(id)
		f = f[1:]
		if len(f) > 0 && string(f[0]) == "->" {
			k.Blocked = true
			f = f[1:]
		}
		if len(f) != 7 {
			return nil, l.errf("%d fields after the id, want 7, in %s", len(f), quote(line))
		}
		k.Kind, k.Mode, k.Type = string(f[0]), string(f[1]), string(f[2])
		if pid := f[3]; string(pid) == "-1" {
			k.Pid = -1
		} else if v, ok := parseUint(pid, 10); ok && v <= 1<<31-1 {
			k.Pid = int(v)
		} else {
			return nil, l.errf("bad pid %s", quote(pid))
		}
		// MAJ:MIN:INO, the device in hex as the kernel prints it, or
		// "<none>:0" for a lock whose file has no inode to show.
		if string(f[4]) == "<none>:0" {
			k.NoInode = true
		} else {
			parts := bytes.Split(f[4], []byte{':'})
			if len(parts) != 3 {
				return nil, l.errf("bad file %s", quote(f[4]))
			}
			maj, ok1 := parseUint32(parts[0], 16)
			min, ok2 := parseUint32(parts[1], 16)
			ino, ok3 := parseUint(parts[2], 10)
			if !ok1 || !ok2 || !ok3 {
				return nil, l.errf("bad file %s", quote(f[4]))
			}
			k.Dev, k.Ino = Dev{Major: maj, Minor: min}, ino
		}
		start, ok := parseUint(f[5], 10)
		if !ok {
			return nil, l.errf("bad start %s", quote(f[5]))
		}
		k.Start = start
		if string(f[6]) == "EOF" {
			k.ToEOF = true
		} else if end, ok := parseUint(f[6], 10); ok {
			k.End = end
		} else {
			return nil, l.errf("bad end %s", quote(f[6]))
		}
		if len(out) >= MaxLocksSize/16 {
			return nil, l.errf("more than %d locks: %w", MaxLocksSize/16, ErrTooLarge)
		}
		out = append(out, k)
	}
}

// String prints a lock as /proc/locks does, without its id.
func (k Lock) String() string {
	end := fmt.Sprint(k.End)
	if k.ToEOF {
		end = "EOF"
	}
	arrow := ""
	if k.Blocked {
		arrow = "-> "
	}
	file := fmt.Sprintf("%02x:%02x:%d", k.Dev.Major, k.Dev.Minor, k.Ino)
	if k.NoInode {
		file = "<none>:0"
	}
	return fmt.Sprintf("%s%s %s %s %d %s %d %s", arrow, k.Kind, k.Mode, k.Type, k.Pid, file, k.Start, end)
}

package procfs

import (
	"bytes"
	"math"
	"strconv"
)

// LockKind is what made a file lock, as /proc/locks names it
// (fs/locks.c lock_get_status).
type LockKind uint8

const (
	LockUnknown LockKind = iota // "UNKNOWN", or a word this parser does not know
	// LockPOSIX is fcntl(F_SETLK): owned by the process (its fd table),
	// released when it closes any fd of the file.
	LockPOSIX
	// LockOFD is fcntl(F_OFD_SETLK): owned by the open file description.
	LockOFD
	// LockFlock is flock(2): owned by the open file description.
	LockFlock
	// LockLease is fcntl(F_SETLEASE): owned by the open file description.
	LockLease
	// LockDeleg is a delegation an NFS server gave a client: no process
	// asks for one.
	LockDeleg
	// LockAccess is FL_ACCESS: a transient lock of mandatory locking's
	// checks (kernels before 5.15).
	LockAccess
)

var lockKindNames = [...]string{"UNKNOWN", "POSIX", "OFDLCK", "FLOCK", "LEASE", "DELEG", "ACCESS"}

func (k LockKind) String() string {
	if int(k) < len(lockKindNames) {
		return lockKindNames[k]
	}
	return "LockKind(" + strconv.Itoa(int(k)) + ")"
}

// LockType is what a lock allows others: the kernel's F_RDLCK, F_WRLCK,
// F_UNLCK, whose values these are.
type LockType uint8

const (
	LockRead   LockType = 0 // F_RDLCK: shared
	LockWrite  LockType = 1 // F_WRLCK: exclusive
	LockUnlock LockType = 2 // F_UNLCK: a lease being broken to nothing
)

func (t LockType) String() string {
	switch t {
	case LockRead:
		return "READ"
	case LockWrite:
		return "WRITE"
	case LockUnlock:
		return "UNLCK"
	}
	return "LockType(" + strconv.Itoa(int(t)) + ")"
}

// LeaseState is the second word of a lease's line.
type LeaseState uint8

const (
	LeaseNone     LeaseState = iota // not a lease
	LeaseActive                     // "ACTIVE": held, nobody is breaking it
	LeaseBreaking                   // "BREAKING": an open conflicts; the holder was signalled
	LeaseBreaker                    // "BREAKER": the open waiting for a break (a waiter line)
)

// Lock is one line of /proc/locks, or the value of one "lock:" line of
// /proc/PID/fdinfo/FD, which lists the locks held through that fd's open
// file description: those it owns (flock, OFD locks, leases) and the
// POSIX locks of the fd's process taken through it.
//
//	1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF
//	1: -> FLOCK  ADVISORY  WRITE 8513 fe:00:9986834 0 EOF
//	2: LEASE  BREAKING  UNLCK 7217 fe:00:9986839 0 EOF
type Lock struct {
	// ID is the line's number in the listing; it names nothing stable.
	ID int64
	// Blocked marks a waiter ("->"): a request blocked on the lock of the
	// lines above with the same ID, not a lock held.
	Blocked bool
	Kind    LockKind
	// Mandatory is "MANDATORY" where "ADVISORY" usually is (kernels before
	// 5.15); MSNFS is flock's LOCK_MAND (before 5.15).
	Mandatory, MSNFS bool
	// Lease is the state of a lease or delegation; LeaseNone otherwise.
	Lease LeaseState
	// Type is the lock's type; for a lease being broken, the type it is
	// being broken to (what F_GETLEASE returns meanwhile).
	Type LockType
	// Pid is the process that took the lock (its tgid): -1 for an OFD
	// lock, which belongs to no process; 0 if the taker is not visible in
	// the reader's pid namespace, or gone.
	Pid int
	// Dev and Ino identify the file (Dev as maps prints it). NoInode is
	// set, and both are zero, for a lock the kernel printed "<none>:0" for.
	Dev     Dev
	Ino     uint64
	NoInode bool
	// Start and End are the first and last byte locked; End is
	// math.MaxInt64 (OFFSET_MAX) and ToEOF set for a lock up to the end of
	// the file, whatever its size. Locks of whole files (flock, leases)
	// are 0-EOF.
	Start, End int64
	ToEOF      bool
}

// Len is the lock's length as fcntl's struct flock takes it: 0 for a
// lock up to the end of the file.
func (l *Lock) Len() int64 {
	if l.ToEOF {
		return 0
	}
	return l.End - l.Start + 1
}

// Range says the bytes the lock covers, for messages: "30-EOF", "10-19".
func (l *Lock) Range() string {
	end := "EOF"
	if !l.ToEOF {
		end = strconv.FormatInt(l.End, 10)
	}
	return strconv.FormatInt(l.Start, 10) + "-" + end
}

// MaxLocksSize bounds /proc/locks: ~60 bytes a lock, a million locks.
const MaxLocksSize = 64 << 20

// maxLocks bounds the locks one listing may hold, whatever its size.
const maxLocks = 1 << 20

// ParseLocks parses /proc/locks.
func ParseLocks(data []byte) ([]Lock, error) { return parseLocks("locks", data) }

// ReadLocks reads and parses /proc/locks: every lock of the system, as
// the reader's pid namespace sees their owners.
func ReadLocks() ([]Lock, error) {
	return readParse("/proc/locks", MaxLocksSize, parseLocks)
}

func parseLocks(file string, data []byte) ([]Lock, error) {
	var out []Lock
	l := newLines(file, data, MaxLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if len(trimSpace(line)) == 0 {
			continue
		}
		if len(out) == maxLocks {
			return nil, l.errf("more than %d locks: %w", maxLocks, ErrTooLarge)
		}
		lk, ok := parseLock(line)
		if !ok {
			return nil, l.errf("bad lock line %s", quote(line))
		}
		out = append(out, lk)
	}
}

// parseLock parses one line in lock_get_status's format:
//
//	ID: [-> ]KIND MODE TYPE PID MAJ:MIN:INO START END
//
// with KIND MODE one of "POSIX ADVISORY", "OFDLCK ADVISORY", "ACCESS
// ADVISORY" (MANDATORY or *NOINODE* for ADVISORY on old kernels), "FLOCK
// ADVISORY" (or MSNFS), "LEASE ACTIVE" (BREAKING, BREAKER; DELEG for
// LEASE), "UNKNOWN UNKNOWN"; TYPE READ, WRITE or UNLCK (old MSNFS locks:
// READ, WRITE or RW); MAJ:MIN:INO or "<none>:0"; END a number or EOF.
func parseLock(line []byte) (Lock, bool) {
	var lk Lock
	f, rest := nextField(line)
	if len(f) < 2 || f[len(f)-1] != ':' {
		return lk, false
	}
	var ok bool
	if lk.ID, ok = parseInt(f[:len(f)-1]); !ok {
		return lk, false
	}
	kind, rest := nextField(rest)
	if bytes.Equal(kind, []byte("->")) {
		lk.Blocked = true
		kind, rest = nextField(rest)
	}
	mode, rest := nextField(rest)
	switch string(kind) {
	case "POSIX", "OFDLCK", "ACCESS":
		lk.Kind = LockPOSIX
		if kind[0] == 'O' {
			lk.Kind = LockOFD
		} else if kind[0] == 'A' {
			lk.Kind = LockAccess
		}
		switch string(mode) {
		case "ADVISORY", "*NOINODE*":
		case "MANDATORY":
			lk.Mandatory = true
		default:
			return lk, false
		}
	case "FLOCK":
		lk.Kind = LockFlock
		switch string(mode) {
		case "ADVISORY":
		case "MSNFS":
			lk.MSNFS = true
		default:
			return lk, false
		}
	case "LEASE", "DELEG":
		lk.Kind = LockLease
		if kind[0] == 'D' {
			lk.Kind = LockDeleg
		}
		switch string(mode) {
		case "ACTIVE":
			lk.Lease = LeaseActive
		case "BREAKING":
			lk.Lease = LeaseBreaking
		case "BREAKER":
			lk.Lease = LeaseBreaker
		default:
			return lk, false
		}
	case "UNKNOWN":
		if string(mode) != "UNKNOWN" {
			return lk, false
		}
	default:
		return lk, false
	}
	typ, rest := nextField(rest)
	switch string(typ) {
	case "READ":
		lk.Type = LockRead
	case "WRITE":
		lk.Type = LockWrite
	case "UNLCK":
		lk.Type = LockUnlock
	case "RW":
		if !lk.MSNFS {
			return lk, false
		}
		lk.Type = LockWrite
	default:
		return lk, false
	}
	pid, rest := nextField(rest)
	p, ok := parseInt32(pid)
	if !ok {
		return lk, false
	}
	lk.Pid = int(p)
	dev, rest := nextField(rest)
	if string(dev) == "<none>:0" {
		lk.NoInode = true
	} else if lk.Dev, lk.Ino, ok = parseDevIno(dev); !ok {
		return lk, false
	}
	start, rest := nextField(rest)
	if lk.Start, ok = parseInt(start); !ok || lk.Start < 0 {
		return lk, false
	}
	end, rest := nextField(rest)
	if string(end) == "EOF" {
		lk.End, lk.ToEOF = math.MaxInt64, true
	} else if lk.End, ok = parseInt(end); !ok || lk.End < lk.Start {
		return lk, false
	}
	if len(trimSpace(rest)) != 0 {
		return lk, false
	}
	return lk, true
}

// parseDevIno parses "fe:00:9986836": major and minor in hex, the inode in
// decimal.
func parseDevIno(b []byte) (Dev, uint64, bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return Dev{}, 0, false
	}
	j := bytes.IndexByte(b[i+1:], ':')
	if j < 0 {
		return Dev{}, 0, false
	}
	j += i + 1
	maj, ok1 := parseUint32(b[:i], 16)
	mnr, ok2 := parseUint32(b[i+1:j], 16)
	ino, ok3 := parseUint(b[j+1:], 10)
	return Dev{Major: maj, Minor: mnr}, ino, ok1 && ok2 && ok3
}

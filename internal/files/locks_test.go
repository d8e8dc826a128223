package files

import (
	"math"
	"testing"

	"github.com/cryo-project/cryo/internal/procfs"
)

func TestLockConflicts(t *testing.T) {
	posix := func(typ procfs.LockType, pid int, start, end int64) *procfs.Lock {
		return &procfs.Lock{Kind: procfs.LockPOSIX, Type: typ, Pid: pid, Start: start, End: end}
	}
	ofd := func(typ procfs.LockType, start, end int64) *procfs.Lock {
		return &procfs.Lock{Kind: procfs.LockOFD, Type: typ, Pid: -1, Start: start, End: end}
	}
	flock := func(typ procfs.LockType) *procfs.Lock {
		return &procfs.Lock{Kind: procfs.LockFlock, Type: typ, Pid: 7, End: math.MaxInt64, ToEOF: true}
	}
	R, W := procfs.LockRead, procfs.LockWrite
	for _, c := range []struct {
		name       string
		want, held *procfs.Lock
		conflict   bool
	}{
		{"read-read", posix(R, 1, 0, 9), posix(R, 2, 0, 9), false},
		{"write-read overlapping", posix(W, 1, 0, 9), posix(R, 2, 9, 20), true},
		{"read-write overlapping", posix(R, 1, 5, 5), posix(W, 2, 0, 9), true},
		{"adjacent", posix(W, 1, 0, 9), posix(W, 2, 10, 19), false},
		{"own lock", posix(W, 1, 0, 9), posix(W, 1, 0, 9), false},
		{"posix against ofd", posix(W, 1, 0, 0), ofd(R, 0, math.MaxInt64), true},
		{"ofd against ofd", ofd(W, 3, 3), ofd(W, 3, 3), true},
		{"ofd against posix of any pid", ofd(R, 3, 3), posix(W, 1, 0, 9), true},
		{"flock against posix", flock(W), posix(W, 1, 0, 9), false},
		{"posix against flock", posix(W, 1, 0, 9), flock(W), false},
		{"flock sh-sh", flock(R), flock(R), false},
		{"flock sh-ex", flock(R), flock(W), true},
	} {
		if got := conflicts(c.want, c.held); got != c.conflict {
			t.Errorf("%s: conflicts = %v, want %v", c.name, got, c.conflict)
		}
	}
}

func TestDescribeLock(t *testing.T) {
	for _, c := range []struct {
		lk   procfs.Lock
		want string
	}{
		{procfs.Lock{Kind: procfs.LockPOSIX, Type: procfs.LockWrite, Start: 30, End: math.MaxInt64, ToEOF: true}, "a POSIX write lock on bytes 30-EOF"},
		{procfs.Lock{Kind: procfs.LockOFD, Type: procfs.LockRead, Start: 5, End: 5}, "an OFD read lock on bytes 5-5"},
		{procfs.Lock{Kind: procfs.LockFlock, Type: procfs.LockWrite}, "an exclusive flock"},
		{procfs.Lock{Kind: procfs.LockFlock, Type: procfs.LockRead}, "a shared flock"},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseActive, Type: procfs.LockRead}, "a read lease"},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseBreaking, Type: procfs.LockUnlock}, "a lease being broken, to be given up"},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseBreaking, Type: procfs.LockRead}, "a write lease being broken down to a read lease"},
	} {
		if got := aLock(&c.lk); got != c.want {
			t.Errorf("aLock(%+v) = %q, want %q", c.lk, got, c.want)
		}
	}
}

// Every lock the kernel shows that cryo cannot take again exactly is
// refused, whatever --file-locks says.
func TestSupportedLock(t *testing.T) {
	for _, c := range []struct {
		lk procfs.Lock
		ok bool
	}{
		{procfs.Lock{Kind: procfs.LockPOSIX, Type: procfs.LockRead}, true},
		{procfs.Lock{Kind: procfs.LockOFD, Type: procfs.LockWrite}, true},
		{procfs.Lock{Kind: procfs.LockFlock, Type: procfs.LockWrite}, true},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseActive, Type: procfs.LockWrite}, true},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseBreaking, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockLease, Lease: procfs.LeaseBreaker, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockDeleg, Lease: procfs.LeaseActive, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockAccess, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockUnknown, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockPOSIX, Mandatory: true, Type: procfs.LockRead}, false},
		{procfs.Lock{Kind: procfs.LockFlock, MSNFS: true, Type: procfs.LockWrite}, false},
		{procfs.Lock{Kind: procfs.LockPOSIX, Type: procfs.LockUnlock}, false},
	} {
		if err := supportedLock(&c.lk); (err == nil) != c.ok {
			t.Errorf("supportedLock(%+v) = %v, want ok %v", c.lk, err, c.ok)
		}
	}
}

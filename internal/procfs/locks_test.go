package procfs

import (
	"bytes"
	"math"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

const eof = math.MaxInt64

func TestParseLocks(t *testing.T) {
	ls, err := ParseLocks(readTestdata(t, "target.locks"))
	if err != nil {
		t.Fatal(err)
	}
	fe := Dev{Major: 0xfe, Minor: 0}
	eq(t, "locks", ls, []Lock{
		{ID: 1, Kind: LockLease, Lease: LeaseActive, Type: LockWrite, Pid: 20996, Dev: fe, Ino: 9986298, End: eof, ToEOF: true},
		{ID: 2, Kind: LockLease, Lease: LeaseBreaking, Type: LockUnlock, Pid: 20996, Dev: fe, Ino: 9986297, End: eof, ToEOF: true},
		{ID: 3, Kind: LockOFD, Type: LockRead, Pid: -1, Dev: fe, Ino: 9986296, Start: 100, End: 4195},
		{ID: 4, Kind: LockOFD, Type: LockWrite, Pid: -1, Dev: fe, Ino: 9986296, Start: 5, End: 5},
		{ID: 5, Kind: LockPOSIX, Type: LockWrite, Pid: 20996, Dev: fe, Ino: 9986295, Start: 30, End: eof, ToEOF: true},
		{ID: 6, Kind: LockPOSIX, Type: LockRead, Pid: 20996, Dev: fe, Ino: 9986295, Start: 10, End: 19},
		{ID: 6, Blocked: true, Kind: LockPOSIX, Type: LockWrite, Pid: 20997, Dev: fe, Ino: 9986295, Start: 12, End: 13},
		{ID: 7, Kind: LockFlock, Type: LockWrite, Pid: 20996, Dev: fe, Ino: 9986294, End: eof, ToEOF: true},
		{ID: 7, Blocked: true, Kind: LockFlock, Type: LockRead, Pid: 20998, Dev: fe, Ino: 9986294, End: eof, ToEOF: true},
	})
	eq(t, "Len 10-19", ls[5].Len(), int64(10))
	eq(t, "Len 30-EOF", ls[4].Len(), int64(0))
	eq(t, "Range", [2]string{ls[5].Range(), ls[4].Range()}, [2]string{"10-19", "30-EOF"})
}

func TestParseLocksOld(t *testing.T) {
	ls, err := ParseLocks(readTestdata(t, "synthetic-old.locks"))
	if err != nil {
		t.Fatal(err)
	}
	d81 := Dev{Major: 8, Minor: 1}
	eq(t, "locks", ls, []Lock{
		{ID: 1, Kind: LockPOSIX, Mandatory: true, Type: LockWrite, Pid: 412, Dev: d81, Ino: 1234, Start: 0, End: 99},
		{ID: 1, Blocked: true, Kind: LockPOSIX, Mandatory: true, Type: LockRead, Pid: 413, Dev: d81, Ino: 1234, Start: 50, End: 59},
		{ID: 1, Blocked: true, Kind: LockPOSIX, Type: LockWrite, Pid: 414, Dev: d81, Ino: 1234, Start: 55, End: 55},
		{ID: 2, Kind: LockFlock, MSNFS: true, Type: LockWrite, Pid: 415, Dev: d81, Ino: 1235, End: eof, ToEOF: true},
		{ID: 3, Kind: LockDeleg, Lease: LeaseActive, Type: LockRead, Pid: 0, Dev: Dev{0, 0x2a}, Ino: 77, End: eof, ToEOF: true},
		{ID: 4, Kind: LockLease, Lease: LeaseBreaker, Type: LockRead, Pid: 416, Dev: d81, Ino: 1236, End: eof, ToEOF: true},
		{ID: 5, Kind: LockAccess, Type: LockRead, Pid: 417, Dev: Dev{0x103, 5}, Ino: 88, End: eof, ToEOF: true},
		{ID: 6, Kind: LockPOSIX, Type: LockWrite, Pid: 418, NoInode: true, End: eof, ToEOF: true},
		{ID: 7, Kind: LockUnknown, Type: LockUnlock, NoInode: true, End: eof, ToEOF: true},
	})
}

func TestParseFdinfoLocks(t *testing.T) {
	fe := Dev{Major: 0xfe}
	fi := parseFdinfoFile(t, "posix-locks")
	eq(t, "posix", fi.Locks, []Lock{
		{ID: 1, Kind: LockPOSIX, Type: LockRead, Pid: 20996, Dev: fe, Ino: 9986295, Start: 10, End: 19},
		{ID: 2, Kind: LockPOSIX, Type: LockWrite, Pid: 20996, Dev: fe, Ino: 9986295, Start: 30, End: eof, ToEOF: true},
	})
	eq(t, "posix Extra", len(fi.Extra), 2)
	fi = parseFdinfoFile(t, "ofd-locks")
	eq(t, "ofd", fi.Locks, []Lock{
		{ID: 1, Kind: LockOFD, Type: LockWrite, Pid: -1, Dev: fe, Ino: 9986296, Start: 5, End: 5},
		{ID: 2, Kind: LockOFD, Type: LockRead, Pid: -1, Dev: fe, Ino: 9986296, Start: 100, End: 4195},
	})
	fi = parseFdinfoFile(t, "lease-breaking")
	eq(t, "lease breaking", fi.Locks, []Lock{
		{ID: 1, Kind: LockLease, Lease: LeaseBreaking, Type: LockUnlock, Pid: 20996, Dev: fe, Ino: 9986297, End: eof, ToEOF: true},
	})
	eq(t, "lease flags", fi.Flags, uint32(oLargefile|0o20000)) // F_SETLEASE sets FASYNC
	fi = parseFdinfoFile(t, "lease-write")
	eq(t, "lease write", fi.Locks, []Lock{
		{ID: 1, Kind: LockLease, Lease: LeaseActive, Type: LockWrite, Pid: 20996, Dev: fe, Ino: 9986298, End: eof, ToEOF: true},
	})
	fi = parseFdinfoFile(t, "pipe")
	eq(t, "no locks", fi.Locks, []Lock(nil))
}

func TestParseLocksBad(t *testing.T) {
	good := "1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF\n"
	for _, bad := range []string{
		"1 POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF",
		"x: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF",
		"1: POSIX  LOOSE  WRITE 7217 fe:00:9986836 30 EOF",
		"1: FLOCK  ACTIVE  WRITE 7217 fe:00:9986836 0 EOF",
		"1: LEASE  ADVISORY  WRITE 7217 fe:00:9986836 0 EOF",
		"1: POSIX  ADVISORY  RW 7217 fe:00:9986836 30 EOF",
		"1: POSIX  ADVISORY  WRITE pid fe:00:9986836 30 EOF",
		"1: POSIX  ADVISORY  WRITE 99999999999 fe:00:9986836 30 EOF",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00 30 EOF",
		"1: POSIX  ADVISORY  WRITE 7217 fg:00:1 30 EOF",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00:-1 30 EOF",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 -3 EOF",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 29",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30",
		"1: POSIX  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF extra",
		"1: NEWKIND  ADVISORY  WRITE 7217 fe:00:9986836 30 EOF",
		"1: UNKNOWN KNOWN  UNLCK 0 <none>:0 0 EOF",
	} {
		_, err := ParseLocks([]byte(good + bad + "\n"))
		wantParseError(t, err, "locks", 2, int64(len(good)))
	}
	if _, err := ParseFdinfo([]byte("pos:\t0\nflags:\t02\nlock:\t1: -> FLOCK  ADVISORY  READ 1 fe:00:1 0 EOF\n")); err == nil {
		t.Error("a waiter in fdinfo parsed")
	}
}

func FuzzParseLocks(f *testing.F) {
	seedFromTestdata(f, "*.locks")
	f.Fuzz(func(t *testing.T, data []byte) {
		ls, err := ParseLocks(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if n := bytes.Count(data, []byte{'\n'}) + 1; len(ls) > n {
			t.Fatalf("%d locks from %d lines", len(ls), n)
		}
		for _, l := range ls {
			if l.Start < 0 || l.End < l.Start || (l.ToEOF && l.End != eof) || l.Len() < 0 {
				t.Fatalf("bad range in %+v", l)
			}
		}
	})
}

// BenchmarkDumpLocks is what a dump reads per thousand POSIX locks: the
// fdinfo of the fd they were taken through and /proc/locks, both made by
// the kernel and parsed.
func BenchmarkDumpLocks(b *testing.B) {
	f, err := os.CreateTemp(b.TempDir(), "locks")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const n = 1000
	for i := 0; i < n; i++ {
		fl := unix.Flock_t{Type: int16(i % 2), Whence: 0, Start: int64(2 * i), Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &fl); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fi, err := FdinfoPid(os.Getpid(), int(f.Fd()))
		if err != nil || len(fi.Locks) != n {
			b.Fatalf("fdinfo: %d locks, %v", len(fi.Locks), err)
		}
		if _, err := ReadLocks(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n/1000, "µs/lock")
}

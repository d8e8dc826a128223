package procfs

import (
	"strings"
	"testing"
)

func parseFdinfoFile(t *testing.T, name string) *Fdinfo {
	t.Helper()
	fi, err := ParseFdinfo(readTestdata(t, "fdinfo/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// Open flags in octal, as the kernel prints them (x86_64 values).
const (
	oWronly    = 01
	oRdwr      = 02
	oAppend    = 02000
	oNonblock  = 04000
	oLargefile = 0100000
	oCloexec   = 02000000
)

func TestParseFdinfoFiles(t *testing.T) {
	fi := parseFdinfoFile(t, "file-append")
	eq(t, "file", *fi, Fdinfo{Pos: 56, Flags: oLargefile | oWronly, MntID: 27, Ino: 9978155})

	fi = parseFdinfoFile(t, "flock")
	eq(t, "flock", *fi, Fdinfo{Pos: 11, Flags: oLargefile | oAppend | oRdwr, MntID: 27, Ino: 9978156,
		Extra: []KV{{"lock", "1: FLOCK  ADVISORY  WRITE 3470 fe:00:9978156 0 EOF"}},
		Locks: []Lock{{ID: 1, Kind: LockFlock, Type: LockWrite, Pid: 3470, Dev: Dev{Major: 0xfe}, Ino: 9978156, End: eof, ToEOF: true}}})

	fi = parseFdinfoFile(t, "pipe")
	eq(t, "pipe", *fi, Fdinfo{Pos: 0, Flags: oWronly, MntID: 16, Ino: 6114})

	fi = parseFdinfoFile(t, "memfd")
	eq(t, "memfd", *fi, Fdinfo{Flags: oLargefile | oRdwr, MntID: 0, Ino: 1047})
}

func TestParseFdinfoEventfd(t *testing.T) {
	fi := parseFdinfoFile(t, "eventfd")
	eq(t, "common", [4]any{fi.Pos, fi.Flags, fi.MntID, fi.Ino}, [4]any{int64(0), uint32(oCloexec | oNonblock | oRdwr), 17, uint64(1039)})
	eq(t, "eventfd", fi.Eventfd, &Eventfd{Count: 0x1239, ID: 1, Semaphore: true})
	eq(t, "Extra", fi.Extra, []KV{{"eventfd-count", "1239"}, {"eventfd-id", "1"}, {"eventfd-semaphore", "1"}})
	eq(t, "others", [5]bool{fi.Epoll != nil, fi.Inotify != nil, fi.Signalfd != nil, fi.Timerfd != nil, fi.Pidfd != nil}, [5]bool{})
}

func TestParseFdinfoEpoll(t *testing.T) {
	fi := parseFdinfoFile(t, "epoll")
	eq(t, "flags", fi.Flags, uint32(oCloexec|oRdwr))
	const epollIn, epollOut, epollErr, epollHup, epollET = 0x1, 0x4, 0x8, 0x10, 0x80000000
	eq(t, "targets", fi.Epoll, []EpollTarget{
		{TFD: 7, Events: epollIn | epollOut | epollErr | epollHup, Data: 7, Pos: 0, Ino: 0x40f, SDev: 0x10},
		{TFD: 3, Events: epollIn | epollErr | epollHup | epollET, Data: 0xdeadbeefcafe, Pos: 0, Ino: 0x40f, SDev: 0x10},
	})
	eq(t, "Extra[0]", fi.Extra[0], KV{"tfd", "7 events:       1d data:                7  pos:0 ino:40f sdev:10"})
	eq(t, "KernelDev", KernelDev(0x10), Dev{0, 16})
}

func TestParseFdinfoInotify(t *testing.T) {
	fi := parseFdinfoFile(t, "inotify")
	eq(t, "flags", fi.Flags, uint32(oNonblock))
	const inModify, inCreate, inDelete = 0x2, 0x100, 0x200
	eq(t, "watches", fi.Inotify, []InotifyWatch{
		{WD: 2, Ino: 0x263, SDev: 0xfe00000, Mask: inModify, FhandleType: 1, Fhandle: []byte{0x63, 0x02, 0, 0, 0, 0, 0, 0}},
		{WD: 1, Ino: 0x3c4a3, SDev: 0xfe00000, Mask: inCreate | inDelete, FhandleType: 1, Fhandle: []byte{0xa3, 0xc4, 0x03, 0, 0, 0, 0, 0}},
	})
	// sdev is the root filesystem, 254:0 (fe:00 in maps).
	eq(t, "KernelDev", KernelDev(fi.Inotify[0].SDev), Dev{254, 0})
}

func TestParseFdinfoSignalfd(t *testing.T) {
	fi := parseFdinfoFile(t, "signalfd")
	// SIGUSR1 (10) and SIGRTMIN+1 (35): bit n-1 for signal n.
	eq(t, "signalfd", fi.Signalfd, &Signalfd{Sigmask: 1<<(10-1) | 1<<(35-1)})
}

func TestParseFdinfoTimerfd(t *testing.T) {
	fi := parseFdinfoFile(t, "timerfd")
	eq(t, "timerfd", fi.Timerfd, &Timerfd{
		ClockID: 1, Ticks: 0, SettimeFlags: 0,
		Value:    Timespec{Sec: 992, Nsec: 111456049},
		Interval: Timespec{Sec: 3, Nsec: 500000000},
	})
	eq(t, "Extra keys", len(fi.Extra), 5)
	eq(t, "settime flags key", fi.Extra[2], KV{"settime flags", "00"})
}

func TestParseFdinfoPidfd(t *testing.T) {
	fi := parseFdinfoFile(t, "pidfd")
	eq(t, "pidfd", fi.Pidfd, &Pidfd{Pid: 3470, NSpid: []int{3470}})
	eq(t, "mnt_id", fi.MntID, 4)
	fi = parseFdinfoFile(t, "pidfd-exited")
	eq(t, "exited", fi.Pidfd, &Pidfd{Pid: -1, NSpid: []int{-1}})
}

func TestParseFdinfoTolerates(t *testing.T) {
	in := "pos:\t0\nflags:\t02\n" +
		"fanotify flags:10 event-flags:0\n" +
		"fanotify ino:3c4a3 sdev:fe00000 mflags:0 mask:1 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000\n" +
		"inotify wd:1 ino:10 sdev:7 mask:2 ignored_mask:0\n" +
		"future-key: whatever\n"
	fi, err := ParseFdinfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "MntID absent", fi.MntID, -1)
	eq(t, "Extra", fi.Extra, []KV{
		{"fanotify", "flags:10 event-flags:0"},
		{"fanotify", "ino:3c4a3 sdev:fe00000 mflags:0 mask:1 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000"},
		{"inotify", "wd:1 ino:10 sdev:7 mask:2 ignored_mask:0"},
		{"future-key", "whatever"},
	})
	// Without exportfs the kernel prints no handle.
	eq(t, "inotify", fi.Inotify, []InotifyWatch{{WD: 1, Ino: 0x10, SDev: 7, Mask: 2}})
}

func TestParseFdinfoErrors(t *testing.T) {
	const hdr = "pos:\t0\nflags:\t02\n"
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"flags not octal", "pos:\t0\nflags:\t09\n", 2, 7, "bad flags value"},
		{"pos", "pos:\tx\n", 1, 0, "bad pos value"},
		{"missing flags", "pos:\t0\n", 1, 7, "missing pos or flags"},
		{"no colon", hdr + "garbage\n", 3, int64(len(hdr)), "no ':'"},
		{"eventfd", hdr + "eventfd-count: xyz\n", 3, int64(len(hdr)), "bad eventfd-count"},
		{"tfd", hdr + "tfd: x events: 1\n", 3, int64(len(hdr)), "bad tfd"},
		{"tfd bare", hdr + "tfd: 5\n", 3, int64(len(hdr)), "bad tfd"},
		{"events", hdr + "tfd: 5 events: zz data: 1\n", 3, int64(len(hdr)), "bad tfd"},
		{"fhandle odd", hdr + "inotify wd:1 f_handle:abc\n", 3, int64(len(hdr)), "bad inotify"},
		{"fhandle len", hdr + "inotify wd:1 fhandle-bytes:2 f_handle:aabbcc\n", 3, int64(len(hdr)), "bad inotify"},
		{"fhandle big", hdr + "inotify wd:1 fhandle-bytes:81 f_handle:aa\n", 3, int64(len(hdr)), "bad inotify"},
		{"no wd", hdr + "inotify ino:1\n", 3, int64(len(hdr)), "bad inotify"},
		{"timespec", hdr + "it_value: (1 2)\n", 3, int64(len(hdr)), "bad it_value"},
		{"nspid", hdr + "NSpid:\t1 x\n", 3, int64(len(hdr)), "bad NSpid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFdinfo([]byte(c.in))
			pe := wantParseError(t, err, "fdinfo", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

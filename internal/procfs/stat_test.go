package procfs

import (
	"strings"
	"testing"
)

func TestParseStatTarget(t *testing.T) {
	s, err := ParseStat(readTestdata(t, "target.stat"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "stat", *s, Stat{
		Pid: 3470, Comm: "a) b (c)", State: 'S', PPid: 1, Pgrp: 3467, Session: 2134,
		TtyNr: 0, Tpgid: -1, Flags: 4194304, Minflt: 125, Cminflt: 0, Majflt: 1, Cmajflt: 0,
		Utime: 0, Stime: 2, Cutime: 0, Cstime: 0, Priority: 20, Nice: 0, NumThreads: 3,
		Itrealvalue: 0, Starttime: 28538, Vsize: 23597056, Rss: 1366, Rsslim: 18446744073709551615,
		Startcode: 94392956059648, Endcode: 94392956062161, Startstack: 140735986555504,
		Kstkesp: 0, Kstkeip: 0, Signal: 2048, Blocked: 2048, Sigignore: 4102, Sigcatch: 0,
		Wchan: 0, Nswap: 0, Cnswap: 0, ExitSignal: 17, Processor: 1, RtPriority: 0, Policy: 0,
		DelayacctBlkioTicks: 0, GuestTime: 0, CguestTime: 0,
		StartData: 94392956071376, EndData: 94392956072224, StartBrk: 94393464147968,
		ArgStart: 140735986559689, ArgEnd: 140735986559698, EnvStart: 140735986559698,
		EnvEnd: 140735986561007, ExitCode: 0, NumFields: 52,
	})
}

func TestParseStatThreadAndKthread(t *testing.T) {
	th, err := ParseStat(readTestdata(t, "target-thread.stat"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "thread", [6]any{th.Pid, th.Comm, th.Flags, th.Signal, th.ExitSignal, th.NumThreads},
		[6]any{3472, "worker x", uint32(4194368), uint64(0), -1, int64(3)})

	k, err := ParseStat(readTestdata(t, "kthreadd.stat"))
	if err != nil {
		t.Fatal(err)
	}
	const pfKthread = 0x00200000
	eq(t, "kthreadd", [6]any{k.Pid, k.Comm, k.PPid, k.Flags & pfKthread, k.Sigignore, k.NumFields},
		[6]any{2, "kthreadd", 0, uint32(pfKthread), uint64(2147483647), 52})
}

func TestParseStatOddComm(t *testing.T) {
	s, err := ParseStat(readTestdata(t, "odd-comm.stat"))
	if err != nil {
		t.Fatal(err)
	}
	// stat does not escape comm: the newline is raw.
	eq(t, "Comm", s.Comm, "a\nb\\c) d (")
	eq(t, "State", s.State, byte('R'))
	eq(t, "PPid", s.PPid, 10896)
	eq(t, "ExitCode", s.ExitCode, 0)
	eq(t, "EnvEnd", s.EnvEnd, uint64(140725902381007))
}

func TestParseStatShortAndLong(t *testing.T) {
	// Old kernels print fewer fields; future ones more.
	s, err := ParseStat([]byte("7 (x) Z 1 7 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "short", [4]any{s.State, s.Pgrp, s.Session, s.NumFields}, [4]any{byte('Z'), 7, 7, 6})
	long := strings.TrimSuffix(string(readTestdata(t, "target.stat")), "\n") + " 99 100\n"
	s, err = ParseStat([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "long", [2]any{s.NumFields, s.ExitCode}, [2]any{54, 0})
}

func TestParseStatErrors(t *testing.T) {
	for _, c := range []struct {
		name, in string
		off      int64
		msg      string
	}{
		{"empty", "", 0, "no (comm)"},
		{"no close", "1 (abc S 1", 0, "no (comm)"},
		{"pid", "x1 (a) S 1\n", 0, "bad pid"},
		{"no state", "1 (a)\n", 5, "missing state"},
		{"state", "1 (a) SS 1\n", 6, "field 3"},
		{"double blank", "1 (a) S  1\n", 8, "field 4: bad number"},
		{"ppid", "1 (a) S x\n", 8, "field 4: bad number"},
		{"int32", "1 (a) S 4294967296\n", 8, "field 4"},
		{"no blank", "1 (a)S 1\n", 5, "expected a blank"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseStat([]byte(c.in))
			pe := wantParseError(t, err, "stat", 1, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

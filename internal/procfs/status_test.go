package procfs

import (
	"strings"
	"testing"
)

func TestParseStatusTarget(t *testing.T) {
	s, err := ParseStatus(readTestdata(t, "target.status"))
	if err != nil {
		t.Fatal(err)
	}
	fields := s.Fields
	s.Fields = nil
	eq(t, "status", *s, Status{
		Name: "a) b (c)", Umask: 0o027, State: 'S', StateName: "S (sleeping)",
		Tgid: 3470, Ngid: 0, Pid: 3470, PPid: 1, TracerPid: 0,
		FDSize: 256, NStgid: []int{3470}, NSpid: []int{3470}, NSpgid: []int{3467}, NSsid: []int{2134},
		Threads: 3, SigQueued: 4, SigQueueLimit: 96365,
		// SIGUSR2 (12) pending; SIGUSR2 and SIGRTMIN+1 (35) blocked;
		// SIGPIPE ignored by the program, SIGURG... by the runtime.
		SigPnd: 0x800, SigBlk: 0x400000800, SigIgn: 0x1006, SigCgt: 0x100000000,
		CapPrm: 0x1fffeffffff, CapEff: 0x1fffeffffff, CapBnd: 0x1fffeffffff,
		SpeculationStoreBypass: "vulnerable", SpeculationIndirectBranch: "always enabled",
	})
	eq(t, "len(Fields)", len(fields), 59)
	eq(t, "Fields[Cpus_allowed_list]", fields["Cpus_allowed_list"], "0-1")
	eq(t, "Fields[Groups]", fields["Groups"], "")
	eq(t, "Fields[untag_mask]", fields["untag_mask"], "0xffffffffffffffff")
	s.Fields = fields
	rss, ok := s.KB("VmRSS")
	eq(t, "VmRSS", [2]any{rss, ok}, [2]any{uint64(5620 << 10), true})
	lck, _ := s.KB("VmLck")
	eq(t, "VmLck", lck, uint64(8<<10))
	_, ok = s.KB("Name")
	eq(t, "KB(Name)", ok, false)
}

func TestParseStatusThreadAndKthread(t *testing.T) {
	th, err := ParseStatus(readTestdata(t, "target-thread.status"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "thread", [5]any{th.Name, th.Tgid, th.Pid, th.NSpid, th.SigPnd}, [5]any{"worker x", 3470, 3472, []int{3472}, uint64(0)})

	k, err := ParseStatus(readTestdata(t, "kthreadd.status"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "kthreadd", [6]any{k.Name, k.Kthread, k.PPid, k.SigIgn, k.CapEff, k.Umask},
		[6]any{"kthreadd", true, 0, ^uint64(0), uint64(0x1ffffffffff), 0o022})
}

func TestParseStatusOddComm(t *testing.T) {
	s, err := ParseStatus(readTestdata(t, "odd-comm.status"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Name", s.Name, "a\nb\\c) d (")
	eq(t, "Fields[Name]", s.Fields["Name"], `a\nb\\c) d (`)
	eq(t, "Pid", s.Pid, 10898)
}

func TestParseStatusLists(t *testing.T) {
	in := "Name:\tx\nPid:\t5\nUid:\t1000\t1001\t1002\t1003\nGid:\t10\t11\t12\t13\n" +
		"Groups:\t4 24 27 1000 \nNSpid:\t5\t1\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\nFuture:\tsomething new\n"
	s, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Uid", s.Uid, [4]uint32{1000, 1001, 1002, 1003})
	eq(t, "Gid", s.Gid, [4]uint32{10, 11, 12, 13})
	eq(t, "Groups", s.Groups, []uint32{4, 24, 27, 1000})
	eq(t, "NSpid", s.NSpid, []int{5, 1})
	eq(t, "NoNewPrivs", s.NoNewPrivs, true)
	eq(t, "Seccomp", [2]int{s.Seccomp, s.SeccompFilters}, [2]int{2, 3})
	eq(t, "Future", s.Fields["Future"], "something new")
	eq(t, "Umask absent", s.Umask, -1)
}

func TestParseStatusErrors(t *testing.T) {
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"no colon", "Name:\tx\nPid 5\n", 2, 8, "no ':'"},
		{"pid", "Pid:\tx\n", 1, 0, "bad Pid value"},
		{"uid count", "Pid:\t1\nUid:\t0\t0\t0\n", 2, 7, "bad Uid value"},
		{"uid extra", "Pid:\t1\nUid:\t0\t0\t0\t0\t0\n", 2, 7, "bad Uid value"},
		{"sigq", "Pid:\t1\nSigQ:\t4\n", 2, 7, "bad SigQ value"},
		{"hex", "Pid:\t1\nSigBlk:\t00000000000000000g\n", 2, 7, "bad SigBlk value"},
		{"hex overflow", "Pid:\t1\nCapEff:\t10000000000000000\n", 2, 7, "bad CapEff value"},
		{"umask", "Pid:\t1\nUmask:\t0999\n", 2, 7, "bad Umask value"},
		{"groups", "Pid:\t1\nGroups:\t1 x\n", 2, 7, "bad Groups value"},
		{"no pid", "Name:\tx\n", 1, 8, "no Pid line"},
		{"long", "Pid:\t1\nGroups:\t" + strings.Repeat("1 ", MaxStatusLineLen), 2, 7, "limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseStatus([]byte(c.in))
			pe := wantParseError(t, err, "status", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

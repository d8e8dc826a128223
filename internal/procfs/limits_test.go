package procfs

import (
	"strings"
	"testing"
)

func TestParseLimitsShell(t *testing.T) {
	ls, err := ParseLimits(readTestdata(t, "shell.limits"))
	if err != nil {
		t.Fatal(err)
	}
	const inf = RlimInfinity
	eq(t, "limits", ls, []Rlimit{
		{inf, inf},         // RLIMIT_CPU
		{inf, inf},         // RLIMIT_FSIZE
		{inf, inf},         // RLIMIT_DATA
		{8388608, inf},     // RLIMIT_STACK
		{1048576, 4194304}, // RLIMIT_CORE: ulimit -S -c 1024, -H -c 4096 (KiB)
		{inf, inf},         // RLIMIT_RSS
		{96364, 96364},     // RLIMIT_NPROC
		{1234, 20000},      // RLIMIT_NOFILE: ulimit -S -n 1234
		{8388608, 8388608}, // RLIMIT_MEMLOCK
		{inf, inf},         // RLIMIT_AS
		{inf, inf},         // RLIMIT_LOCKS
		{96364, 96364},     // RLIMIT_SIGPENDING
		{819200, 819200},   // RLIMIT_MSGQUEUE
		{0, 0},             // RLIMIT_NICE, no unit
		{0, 0},             // RLIMIT_RTPRIO, no unit
		{inf, inf},         // RLIMIT_RTTIME
	})
}

func TestParseLimitsEdges(t *testing.T) {
	const header = "Limit                     Soft Limit           Hard Limit           Units     \n"
	ls, err := ParseLimits([]byte(header))
	if err != nil || ls == nil || len(ls) != 0 {
		t.Errorf("header only: %#v, %v", ls, err)
	}
	line := func(soft, hard string) string {
		return "Max cpu time              " + soft + strings.Repeat(" ", 21-len(soft)) + hard + strings.Repeat(" ", 21-len(hard)) + "seconds   \n"
	}
	ls, err = ParseLimits([]byte(header + line("1", "18446744073709551614")))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "largest finite", ls, []Rlimit{{1, RlimInfinity - 1}})

	hl := int64(len(header))
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"empty", "", 1, 0, "no header"},
		{"no header", line("1", "2"), 1, 0, "no header"},
		{"short", header + "Max cpu time\n", 2, hl, "no values"},
		{"name too long", header + "Max cpu time and then some" + "1 2\n", 2, hl, "no values"},
		{"soft", header + line("x", "2"), 2, hl, "bad limit"},
		{"hard missing", header + "Max cpu time              1\n", 2, hl, "bad limit"},
		{"negative", header + line("-1", "2"), 2, hl, "bad limit"},
		{"overflow", header + line("18446744073709551616", "2"), 2, hl, "bad limit"},
		{"too many", header + strings.Repeat(line("1", "2"), maxLimits+1), maxLimits + 2, hl + int64(maxLimits*len(line("1", "2"))), "more than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseLimits([]byte(c.in))
			pe := wantParseError(t, err, "limits", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

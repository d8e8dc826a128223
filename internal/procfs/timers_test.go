package procfs

import (
	"strings"
	"testing"
)

func TestParseTimersTarget(t *testing.T) {
	ts, err := ParseTimers(readTestdata(t, "target.timers"))
	if err != nil {
		t.Fatal(err)
	}
	const sigrtmin2, sigalrm = 36, 14
	eq(t, "timers", ts, []PosixTimer{
		{ID: 2, Signal: sigalrm, SigValue: 0x1122334455667788, Notify: NotifySignal, ThreadID: true, Target: 3470, ClockID: 7},
		{ID: 1, Signal: sigrtmin2, SigValue: 0x1122334455667788, Notify: NotifyNone, Target: 3470, ClockID: 1},
		{ID: 0, Signal: sigrtmin2, SigValue: 0x1122334455667788, Notify: NotifySignal, Target: 3470, ClockID: 0},
	})
	eq(t, "SigevNotify", [3]int{ts[0].SigevNotify(), ts[1].SigevNotify(), ts[2].SigevNotify()}, [3]int{4, 1, 0})
	eq(t, "Notify.String", NotifyThread.String(), "thread")
}

func TestParseTimersEdges(t *testing.T) {
	ts, err := ParseTimers(nil)
	if err != nil || ts == nil || len(ts) != 0 {
		t.Errorf("empty: %#v, %v", ts, err)
	}
	ts, err = ParseTimers([]byte("ID: 5\nsignal: 10/(null)\nnotify: thread/pid.9\nClockID: 2\nfuture: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "old kernel", ts, []PosixTimer{{ID: 5, Signal: 10, Notify: NotifyThread, Target: 9, ClockID: 2}})

	const rec = "ID: 0\n"
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"no ID", "signal: 1/0\n", 1, 0, "before the first ID"},
		{"ID", "ID: x\n", 1, 0, "bad timer ID"},
		{"signal", rec + "signal: 1\n", 2, 6, "bad signal"},
		{"sigval", rec + "signal: 1/zz\n", 2, 6, "bad signal"},
		{"notify kind", rec + "notify: bogus/pid.1\n", 2, 6, "unknown notify kind"},
		{"notify target", rec + "notify: signal/gid.1\n", 2, 6, "unknown target kind"},
		{"notify id", rec + "notify: signal/pid.x\n", 2, 6, "bad target id"},
		{"clock", rec + "ClockID: x\n", 2, 6, "bad ClockID"},
		{"no colon", rec + "junk\n", 2, 6, "no ':'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseTimers([]byte(c.in))
			pe := wantParseError(t, err, "timers", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

package dump

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The /proc/PID/limits fallback must read exactly what prlimit reads.
func TestReadRlimitsMatchesPrlimit(t *testing.T) {
	var want [16]unix.Rlimit
	for r := range want {
		if err := unix.Prlimit(os.Getpid(), r, nil, &want[r]); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Fatal(err)
	}
	var got [16]unix.Rlimit
	if err := parseLimits(b, &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("readRlimits %v, prlimit %v", got, want)
	}
}

func TestParseLimitsRejectsGarbage(t *testing.T) {
	var out [16]unix.Rlimit
	for _, in := range []string{"", "Limit\nMax cpu time", "x\n" + string(make([]byte, 40))} {
		if err := parseLimits([]byte(in), &out); err == nil {
			t.Errorf("parseLimits(%q) accepted", in)
		}
	}
}

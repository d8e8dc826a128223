package dump

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The /proc/PID/limits fallback must read exactly what prlimit reads.
func TestRlimitsFromProcMatchPrlimit(t *testing.T) {
	var want [16]unix.Rlimit
	for r := range want {
		if err := unix.Prlimit(os.Getpid(), r, nil, &want[r]); err != nil {
			t.Fatal(err)
		}
	}
	var got [16]unix.Rlimit
	if err := rlimitsFromProc(os.Getpid(), &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("/proc/self/limits %v, prlimit %v", got, want)
	}
}

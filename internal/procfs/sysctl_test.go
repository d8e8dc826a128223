package procfs

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestParseSysctlIntCaptured(t *testing.T) {
	for name, want := range map[string]int64{
		"kernel.pid_max.sysctl":     32768,
		"kernel.ns_last_pid.sysctl": 20939,
		"vm.memfd_noexec.sysctl":    0,
	} {
		v, err := ParseSysctlInt(readTestdata(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		eq(t, name, v, want)
	}
}

func TestParseSysctlIntEdges(t *testing.T) {
	for in, want := range map[string]int64{"-1\n": -1, "7": 7, "9223372036854775807\n": 1<<63 - 1} {
		v, err := ParseSysctlInt([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
		}
		eq(t, strconv.Quote(in), v, want)
	}
	for _, in := range []string{"", "\n", "4\t4\t1\t7\n", "+1\n", "1\n\n", " 1\n", "0x10\n", "9223372036854775808\n"} {
		_, err := ParseSysctlInt([]byte(in))
		pe := wantParseError(t, err, "sysctl", 1, 0)
		if !strings.Contains(pe.Error(), "not one integer") {
			t.Errorf("%q: error %q", in, pe)
		}
	}
}

// TestLiveSysctlInt: kernel.pid_max through SysctlInt is what the file
// says, and a sysctl this kernel lacks is fs.ErrNotExist.
func TestLiveSysctlInt(t *testing.T) {
	v, err := SysctlInt("kernel.pid_max")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "kernel.pid_max", strconv.FormatInt(v, 10)+"\n", string(b))
	if _, err := SysctlInt("kernel.no_such_sysctl"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing sysctl: %v, want fs.ErrNotExist", err)
	}
}

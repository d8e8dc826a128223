package procfs

import (
	"os"
	"testing"
)

func TestParseLocksGolden(t *testing.T) {
	b, err := os.ReadFile("testdata/sample.locks")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := ParseLocks(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"POSIX ADVISORY WRITE 1234 fe:00:9978290 0 EOF",
		"POSIX ADVISORY READ 1234 fe:00:9978290 100 199",
		"-> POSIX ADVISORY WRITE 1300 fe:00:9978290 100 199",
		"FLOCK ADVISORY WRITE 1234 00:1b:5512 0 EOF",
		"OFDLCK ADVISORY READ -1 fe:00:9978291 0 4095",
		"LEASE ACTIVE READ 1234 fe:00:9978292 0 EOF",
		"-> LEASE BREAKER READ 25336 <none>:0 0 EOF",
	}
	if len(ls) != len(want) {
		t.Fatalf("%d locks, want %d", len(ls), len(want))
	}
	for i, l := range ls {
		if l.String() != want[i] {
			t.Errorf("lock %d: %q, want %q", i, l.String(), want[i])
		}
	}
	if !ls[2].Blocked || ls[2].ID != 2 || ls[4].Pid != -1 || ls[3].Dev != (Dev{0, 0x1b}) {
		t.Errorf("fields: %+v", ls)
	}
	for _, bad := range []string{"x: POSIX ADVISORY WRITE 1 fe:00:1 0 EOF\n", "1: POSIX ADVISORY WRITE 1 fe:00 0 EOF\n", "1: POSIX ADVISORY WRITE 1 fe:00:1 0\n", "1: POSIX ADVISORY WRITE q fe:00:1 0 EOF\n"} {
		if _, err := ParseLocks([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestLocksLive(t *testing.T) {
	if _, err := Locks(); err != nil {
		t.Fatal(err)
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
		if len(ls) > len(data)/8+1 {
			t.Fatalf("%d locks from %d bytes", len(ls), len(data))
		}
	})
}

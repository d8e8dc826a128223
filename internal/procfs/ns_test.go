package procfs

import (
	"testing"
)

func TestParseTimensOffsets(t *testing.T) {
	o, err := ParseTimensOffsets([]byte("monotonic     1000         5\nboottime     -2000    999999999\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := TimensOffsets{1000, 5, -2000, 999999999}
	if o != want {
		t.Fatalf("got %+v, want %+v", o, want)
	}
	back, err := ParseTimensOffsets(FormatTimensOffsets(o))
	if err != nil || back != o {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, bad := range []string{"", "monotonic 1 0\n", "monotonic 1 0\nboottime 1\n", "monotonic 1 1000000000\nboottime 0 0\n",
		"monotonic 1 0\nmonotonic 1 0\n", "realtime 1 0\nboottime 0 0\n", "monotonic x 0\nboottime 0 0\n"} {
		if _, err := ParseTimensOffsets([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseSysctlInts(t *testing.T) {
	v, err := ParseSysctlInts([]byte("32000\t1024000000\t500\t32000\n"))
	if err != nil || len(v) != 4 || v[0] != 32000 || v[3] != 32000 {
		t.Fatalf("got %v, %v", v, err)
	}
	for _, bad := range []string{"", "\n", "1 x\n"} {
		if _, err := ParseSysctlInts([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseTimensOffsets(f *testing.F) {
	f.Add([]byte("monotonic 1 2\nboottime 3 4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseTimensOffsets(b)
		if err == nil {
			if back, err := ParseTimensOffsets(FormatTimensOffsets(o)); err != nil || back != o {
				t.Fatalf("round trip of %+v: %+v, %v", o, back, err)
			}
		}
	})
}

func TestParseSysctlUint(t *testing.T) {
	v, err := ParseSysctlUint([]byte("18446744073692774399\n"))
	if err != nil || v != 18446744073692774399 {
		t.Fatalf("got %d, %v", v, err)
	}
	if _, err := ParseSysctlUint([]byte("-1\n")); err == nil {
		t.Fatal("-1: no error")
	}
}

package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	for _, c := range []struct {
		file string
		want []uint64
	}{
		{"online.cpulist", []uint64{0x3}},
		{"sparse.cpulist", func() []uint64 {
			m := make([]uint64, 128)
			m[0] = 1 | 0x3c | 1<<63
			m[1] = 0x3
			m[127] = 1 << 63
			return m
		}()},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseCPUList(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %#x, want %#x", c.file, got, c.want)
		}
	}
	if m, err := ParseCPUList(""); err != nil || len(m) != 0 {
		t.Errorf("empty list: %v, %v", m, err)
	}
	for _, bad := range []string{"-", "1-", "3-1", "x", "8192", "1,,2", "99999999999"} {
		if _, err := ParseCPUList(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParseCPUList(f *testing.F) {
	seedFromTestdata(f, "*.cpulist")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseCPUList(string(data))
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(m) > MaxCPUs/64 {
			t.Fatalf("%d words for a list of %d bytes", len(m), len(data))
		}
	})
}

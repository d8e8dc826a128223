package procfs

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// Each fuzzer checks that the parser never panics, that every error is a
// *ParseError matching ErrMalformed, and that what it returns is bounded by
// the input (no allocation driven by a number read from the data).

func checkFuzzErr(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v (%T) is not a *ParseError matching ErrMalformed", err, err)
	}
	if pe.Error() == "" {
		t.Fatal("empty error message")
	}
}

func FuzzParseSmaps(f *testing.F) {
	seedFromTestdata(f, "*.smaps")
	seedFromTestdata(f, "*.maps")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, smaps := range []bool{true, false} {
			ms, err := parseMaps("fuzz", data, smaps)
			if err != nil {
				checkFuzzErr(t, err)
				continue
			}
			if n := bytes.Count(data, []byte{'\n'}) + 1; len(ms) > n {
				t.Fatalf("%d mappings from %d lines", len(ms), n)
			}
			for i := range ms {
				m := &ms[i]
				if m.Start > m.End {
					t.Fatalf("Start %#x > End %#x", m.Start, m.End)
				}
				if len(m.Path) > len(m.RawPath) || len(m.UnknownVmFlags) > maxUnknownVmFlags {
					t.Fatalf("unbounded fields in %+v", m)
				}
				if m.Deleted && m.Kind != KindFile {
					t.Fatalf("Deleted set on kind %v", m.Kind)
				}
			}
		}
	})
}

func FuzzParseStat(f *testing.F) {
	seedFromTestdata(f, "*.stat")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStat(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(s.Comm) > len(data) || s.NumFields < 3 {
			t.Fatalf("bad result %+v", s)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	seedFromTestdata(f, "*.status")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStatus(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(s.Fields) > maxStatusFields || len(s.Groups) > maxIDList || len(s.Name) > len(data) {
			t.Fatalf("unbounded result: %d fields, %d groups", len(s.Fields), len(s.Groups))
		}
	})
}

func FuzzParseFdinfo(f *testing.F) {
	seedFromTestdata(f, "fdinfo/*")
	f.Fuzz(func(t *testing.T, data []byte) {
		fi, err := ParseFdinfo(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(fi.Extra) > bytes.Count(data, []byte{'\n'})+1 {
			t.Fatalf("%d extra lines", len(fi.Extra))
		}
		if len(fi.Locks) > len(fi.Extra) {
			t.Fatalf("%d locks from %d extra lines", len(fi.Locks), len(fi.Extra))
		}
		for _, w := range fi.Inotify {
			if len(w.Fhandle) > maxFhandle {
				t.Fatalf("%d-byte handle", len(w.Fhandle))
			}
		}
	})
}

func FuzzParseAuxv(f *testing.F) {
	seedFromTestdata(f, "*.auxv")
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseAuxv(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(v)*auxvEntrySize > len(data) {
			t.Fatalf("%d entries from %d bytes", len(v), len(data))
		}
		for _, p := range v {
			if p.Key == AT_NULL {
				t.Fatal("AT_NULL in result")
			}
		}
	})
}

func FuzzParseTimers(f *testing.F) {
	seedFromTestdata(f, "*.timers")
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTimers(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(ts) > bytes.Count(data, []byte("ID"))+1 {
			t.Fatalf("%d timers", len(ts))
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	seedFromTestdata(f, "*.mountinfo")
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMountinfo(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		for i := range ms {
			m := &ms[i]
			if len(m.Optional) > maxOptionalFields || len(m.MountPoint) > len(data) {
				t.Fatalf("unbounded mount %+v", m)
			}
		}
	})
}

func FuzzParseChildren(f *testing.F) {
	seedFromTestdata(f, "*.children")
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := ParseChildren(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if 2*len(cs) > len(data)+1 {
			t.Fatalf("%d pids from %d bytes", len(cs), len(data))
		}
		for _, c := range cs {
			if c <= 0 {
				t.Fatalf("pid %d", c)
			}
		}
	})
}

func FuzzParseLimits(f *testing.F) {
	seedFromTestdata(f, "*.limits")
	f.Fuzz(func(t *testing.T, data []byte) {
		ls, err := ParseLimits(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(ls) > maxLimits || len(ls) > bytes.Count(data, []byte{'\n'}) {
			t.Fatalf("%d limits from %d lines", len(ls), bytes.Count(data, []byte{'\n'})+1)
		}
	})
}

func FuzzParseSysctlInt(f *testing.F) {
	seedFromTestdata(f, "*.sysctl")
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseSysctlInt(data)
		// strconv is the oracle: it agrees on every number, and differs
		// only in also taking a '+' the kernel never prints.
		s := strings.TrimSuffix(string(data), "\n")
		want, werr := strconv.ParseInt(s, 10, 64)
		if err != nil {
			checkFuzzErr(t, err)
			if werr == nil && !strings.HasPrefix(s, "+") {
				t.Fatalf("%q refused, strconv reads %d", data, want)
			}
			return
		}
		if werr != nil || v != want {
			t.Fatalf("%q parsed as %d, strconv: %d, %v", data, v, want, werr)
		}
	})
}

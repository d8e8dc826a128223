package feature

import (
	"encoding/binary"
	"errors"
	"testing"
)

func capXattr(words ...uint32) []byte {
	b := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	return b
}

var fileCapCases = []struct {
	name string
	in   []byte
	want FileCaps
	bad  bool
}{
	// setcap cap_checkpoint_restore,cap_sys_ptrace+ep: bit 40 is in the high word.
	{"v2", capXattr(0x02000001, 1<<19, 0, 1<<(40-32), 0), FileCaps{Revision: 2, Effective: true, Permitted: 1<<19 | 1<<40}, false},
	{"v3", capXattr(0x03000000, 1<<21, 1<<7, 0, 0, 100000), FileCaps{Revision: 3, Permitted: 1 << 21, Inheritable: 1 << 7, RootUID: 100000}, false},
	{"v1", capXattr(0x01000001, 1<<19, 0), FileCaps{Revision: 1, Effective: true, Permitted: 1 << 19}, false},
	{"v2 short", capXattr(0x02000000, 0, 0, 0), FileCaps{}, true},
	{"v3 as v2 size", capXattr(0x03000000, 0, 0, 0, 0), FileCaps{}, true},
	{"revision 4", capXattr(0x04000000, 0, 0, 0, 0, 0), FileCaps{}, true},
	{"empty", nil, FileCaps{}, true},
}

func TestParseFileCaps(t *testing.T) {
	for _, c := range fileCapCases {
		got, err := ParseFileCaps(c.in)
		if c.bad {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: err %v, want ErrMalformed", c.name, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func FuzzParseFileCaps(f *testing.F) {
	for _, c := range fileCapCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fc, err := ParseFileCaps(b)
		if err == nil && (fc.Revision < 1 || fc.Revision > 3) {
			t.Errorf("revision %d accepted", fc.Revision)
		}
	})
}

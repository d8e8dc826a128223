package procfs

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseAuxvTarget(t *testing.T) {
	v, err := ParseAuxv(readTestdata(t, "target.auxv"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "auxv", v, []AuxvPair{
		{AT_SYSINFO_EHDR, 0x7f81af77e000}, // [vdso] in target.maps
		{AT_MINSIGSTKSZ, 0xd30},
		{AT_HWCAP, 0x178bfbff},
		{AT_PAGESZ, 4096},
		{AT_CLKTCK, 100},
		{AT_PHDR, 0x55d9929d7040},
		{AT_PHENT, 56},
		{AT_PHNUM, 13},
		{AT_BASE, 0x7f81af780000}, // ld.so
		{8, 0},                    // AT_FLAGS
		{AT_ENTRY, 0x55d9929d8260},
		{11, 0}, {12, 0}, {13, 0}, {14, 0}, // AT_UID, AT_EUID, AT_GID, AT_EGID
		{AT_SECURE, 0},
		{AT_RANDOM, 0x7fffa67c5d19},
		{AT_HWCAP2, 2},
		{AT_EXECFN, 0x7fffa67c6fef},
		{15, 0x7fffa67c5d29}, // AT_PLATFORM
		{27, 0x1c},           // AT_RSEQ_FEATURE_SIZE
		{28, 0x20},           // AT_RSEQ_ALIGN
	})
	pg, ok := AuxvValue(v, AT_PAGESZ)
	eq(t, "AuxvValue", [2]any{pg, ok}, [2]any{uint64(4096), true})
	_, ok = AuxvValue(v, 99)
	eq(t, "AuxvValue missing", ok, false)
}

func TestParseAuxvEdges(t *testing.T) {
	v, err := ParseAuxv(nil)
	if err != nil || len(v) != 0 {
		t.Errorf("empty: %v, %v", v, err)
	}
	// Trailing bytes after AT_NULL are ignored.
	b := make([]byte, 64)
	binary.NativeEndian.PutUint64(b[0:], AT_PAGESZ)
	binary.NativeEndian.PutUint64(b[8:], 4096)
	v, err = ParseAuxv(b)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "after AT_NULL", v, []AuxvPair{{AT_PAGESZ, 4096}})

	data := readTestdata(t, "target.auxv")
	_, err = ParseAuxv(data[:len(data)-8])
	pe := wantParseError(t, err, "auxv", 0, int64(len(data)-16))
	if !strings.Contains(pe.Error(), "trailing 8 bytes") {
		t.Errorf("error %q", pe)
	}
	_, err = ParseAuxv(data[:len(data)-16])
	wantParseError(t, err, "auxv", 0, int64(len(data)-16))
}

package procfs

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func findMapping(t *testing.T, ms []Mapping, start uint64) *Mapping {
	t.Helper()
	for i := range ms {
		if ms[i].Start == start {
			return &ms[i]
		}
	}
	t.Fatalf("no mapping at %#x", start)
	return nil
}

func TestParseSmapsTarget(t *testing.T) {
	ms, err := ParseSmaps(readTestdata(t, "target.smaps"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "len", len(ms), 37)

	first := ms[0]
	eq(t, "first", first, Mapping{
		Start: 0x55d9929d7000, End: 0x55d9929d8000,
		Perms:  Perms{Read: true, Raw: "r--p"},
		Offset: 0, Dev: Dev{0xfe, 0}, Inode: 9978145, Kind: KindFile,
		RawPath: "/tmp/procfs-gen/target", Path: "/tmp/procfs-gen/target",
		Size: 4096, KernelPageSize: 4096, MMUPageSize: 4096, Rss: 4096, Pss: 4096, PssDirty: 4096,
		PrivateDirty: 4096, Referenced: 4096, ProtectionKey: -1,
		VmFlags: VmRead | VmMayRead | VmMayWrite | VmMayExec, RawVmFlags: "rd mr mw me",
	})

	libc := findMapping(t, ms, 0x7f81af5b1000)
	eq(t, "libc.End", libc.End, uint64(0x7f81af707000))
	eq(t, "libc.Perms", libc.Perms, Perms{Read: true, Exec: true, Raw: "r-xp"})
	eq(t, "libc.Offset", libc.Offset, uint64(0x26000))
	eq(t, "libc.Path", libc.Path, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	eq(t, "libc.Size", libc.Size, uint64(1368<<10))
	eq(t, "libc.Rss", libc.Rss, uint64(892<<10))
	eq(t, "libc.Pss", libc.Pss, uint64(139<<10))
	eq(t, "libc.SharedClean", libc.SharedClean, uint64(892<<10))
	eq(t, "libc.VmFlags", libc.VmFlags, VmRead|VmExec|VmMayRead|VmMayWrite|VmMayExec)

	thp := findMapping(t, ms, 0x7f81ae000000)
	eq(t, "thp.Kind", thp.Kind, KindAnon)
	eq(t, "thp.Path", thp.Path, "")
	eq(t, "thp.AnonHugePages", thp.AnonHugePages, uint64(4<<20))
	eq(t, "thp.Anonymous", thp.Anonymous, uint64(4<<20))
	eq(t, "thp.THPEligible", thp.THPEligible, true)
	eq(t, "thp.VmFlags", thp.VmFlags, VmRead|VmWrite|VmMayRead|VmMayWrite|VmMayExec|VmNoReserve|VmHugePage)
	eq(t, "thp words", thp.VmFlags.Words(), []string{"PROT_READ", "PROT_WRITE", "may-read", "may-write", "may-exec", "MAP_NORESERVE", "MADV_HUGEPAGE"})

	del := findMapping(t, ms, 0x7f81ae57c000)
	eq(t, "del.Kind", del.Kind, KindFile)
	eq(t, "del.Deleted", del.Deleted, true)
	eq(t, "del.Path", del.Path, "/tmp/procfs-gen/my data (v2).bin")
	eq(t, "del.RawPath", del.RawPath, "/tmp/procfs-gen/my data (v2).bin (deleted)")
	eq(t, "del.Perms", del.Perms, Perms{Read: true, Write: true, Shared: true, Raw: "rw-s"})
	eq(t, "del.Offset", del.Offset, uint64(0x1000))
	eq(t, "del.Inode", del.Inode, uint64(9978157))
	eq(t, "del.PrivateDirty", del.PrivateDirty, uint64(4096))

	memfd := findMapping(t, ms, 0x7f81ae57b000)
	eq(t, "memfd.Path", memfd.Path, "/memfd:cryo-memfd")
	eq(t, "memfd.Deleted", memfd.Deleted, true)
	eq(t, "memfd.Dev", memfd.Dev, Dev{0, 1})
	eq(t, "memfd.Perms.Raw", memfd.Perms.Raw, "r--s")
	// PROT_READ, but of an fd opened O_RDWR: the kernel keeps VM_SHARED.
	eq(t, "memfd flags", memfd.VmFlags, VmRead|VmShared|VmMayRead|VmMayWrite|VmMayExec|VmMayShare)

	shanon := findMapping(t, ms, 0x7f81af771000)
	eq(t, "shanon.Path", shanon.Path, "/dev/zero")
	eq(t, "shanon.Deleted", shanon.Deleted, true)

	dc := findMapping(t, ms, 0x7f81ae581000)
	eq(t, "dc.VmFlags", dc.VmFlags.Mnemonics(), []string{"rd", "wr", "ex", "mr", "mw", "me", "rr", "dc", "ac", "dd"})
	wf := findMapping(t, ms, 0x7f81af76e000)
	eq(t, "wf.VmFlags", wf.VmFlags.Mnemonics(), []string{"rd", "wr", "mr", "mw", "me", "sr", "ac", "wf", "nh"})
	sealed := findMapping(t, ms, 0x7f81af76d000)
	eq(t, "sealed", sealed.VmFlags, VmRead|VmMayRead|VmMayWrite|VmMayExec|VmSealed)
	locked := findMapping(t, ms, 0x7f81af76f000)
	eq(t, "locked.Locked", locked.Locked, uint64(8<<10))
	eq(t, "locked lo", locked.VmFlags.Has(VmLocked|VmAccount), true)
	guard := findMapping(t, ms, 0x7f81ae57f000)
	eq(t, "guard.Perms", guard.Perms, Perms{Raw: "---p"})

	for _, c := range []struct {
		start uint64
		kind  Kind
		pages uint64
		flags VmFlags
	}{
		{0x55d9b0e65000, KindHeap, 33, VmRead | VmWrite | VmMayRead | VmMayWrite | VmMayExec | VmAccount},
		// The kernel facts the brief relies on: 4 pages of [vvar], 2 of
		// [vvar_vclock], 2 of [vdso].
		{0x7f81af778000, KindVvar, 4, VmRead | VmMayRead | VmPFNMap | VmIO | VmDontExpand | VmDontDump},
		{0x7f81af77c000, KindVvarVclock, 2, VmRead | VmMayRead | VmPFNMap | VmIO | VmDontExpand | VmDontDump},
		{0x7f81af77e000, KindVdso, 2, VmRead | VmExec | VmMayRead | VmMayWrite | VmMayExec | VmDontExpand},
		{0x7fffa67a6000, KindStack, 33, VmRead | VmWrite | VmMayRead | VmMayWrite | VmMayExec | VmGrowsDown | VmAccount},
		{0xffffffffff600000, KindVsyscall, 1, VmExec},
	} {
		m := findMapping(t, ms, c.start)
		if m.Kind != c.kind || m.Len() != c.pages*4096 || m.Size != m.Len() || m.VmFlags != c.flags {
			t.Errorf("%s at %#x: kind %v, %d bytes (Size %d), flags %v; want %v, %d pages, %v",
				m.Path, c.start, m.Kind, m.Len(), m.Size, m.VmFlags, c.kind, c.pages, c.flags)
		}
		if m.Path != "["+c.kind.String()+"]" || m.Deleted {
			t.Errorf("%#x: Path %q Deleted %v", c.start, m.Path, m.Deleted)
		}
	}

	var rss uint64
	for i := range ms {
		rss += ms[i].Rss
		if ms[i].UnknownVmFlags != nil {
			t.Errorf("%#x: unknown flags %q", ms[i].Start, ms[i].UnknownVmFlags)
		}
		if ms[i].Size != ms[i].Len() {
			t.Errorf("%#x: Size %d != End-Start %d", ms[i].Start, ms[i].Size, ms[i].Len())
		}
	}
	// VmRSS in the status captured right after smaps.
	eq(t, "total Rss", rss, uint64(5620<<10))
}

// TestParseMapsAgreesWithSmaps: maps was read just after smaps of the same
// process, so every header field must match.
func TestParseMapsAgreesWithSmaps(t *testing.T) {
	sm, err := ParseSmaps(readTestdata(t, "target.smaps"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMaps(readTestdata(t, "target.maps"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(sm) {
		t.Fatalf("maps has %d mappings, smaps %d", len(m), len(sm))
	}
	for i := range m {
		h := sm[i]
		h.Size, h.KernelPageSize, h.MMUPageSize, h.Rss, h.Pss, h.PssDirty = 0, 0, 0, 0, 0, 0
		h.SharedClean, h.SharedDirty, h.PrivateClean, h.PrivateDirty, h.Referenced = 0, 0, 0, 0, 0
		h.Anonymous, h.KSM, h.LazyFree, h.AnonHugePages, h.ShmemPmdMapped, h.FilePmdMapped = 0, 0, 0, 0, 0, 0
		h.SharedHugetlb, h.PrivateHugetlb, h.Swap, h.SwapPss, h.Locked, h.THPEligible = 0, 0, 0, 0, 0, false
		h.VmFlags, h.RawVmFlags, h.UnknownVmFlags = 0, "", nil
		eq(t, "mapping", m[i], h)
	}
}

func TestParseMapsOddNames(t *testing.T) {
	ms, err := ParseMaps(readTestdata(t, "odd-names.maps"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "len", len(ms), 4)
	eq(t, "heap", ms[0].Kind, KindHeap)
	// A literal backslash is not escaped by the kernel: this name and one
	// with a real newline print the same. Path resolves to the newline.
	eq(t, "backslash RawPath", ms[1].RawPath, `/tmp/procfs-gen/back\012slash`)
	eq(t, "backslash Path", ms[1].Path, "/tmp/procfs-gen/back\nslash")
	// A live file whose name ends in " (deleted)" looks deleted.
	eq(t, "fake deleted", ms[2].Deleted, true)
	eq(t, "fake deleted Path", ms[2].Path, "/tmp/procfs-gen/not gone")
	eq(t, "newline RawPath", ms[3].RawPath, `/tmp/procfs-gen/new\012line`)
	eq(t, "newline Path", ms[3].Path, "/tmp/procfs-gen/new\nline")
	eq(t, "newline Inode", ms[3].Inode, uint64(9982217))
}

func TestParseMapsSyntheticNames(t *testing.T) {
	ms, err := ParseMaps(readTestdata(t, "synthetic-anon-names.maps"))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind     Kind
		anonName string
		path     string
	}
	wants := []want{
		{KindAnonNamed, "cryo test buf", "[anon:cryo test buf]"},
		{KindAnonShmemNamed, "shared name", "[anon_shmem:shared name]"},
		{KindAnonNamed, "with ) and spaces  ", "[anon:with ) and spaces  ]"},
		{KindUprobes, "", "[uprobes]"},
		{KindSpecial, "", "[stack:1234]"},
		{KindSpecial, "", "[vectors]"},
	}
	if len(ms) != len(wants) {
		t.Fatalf("got %d mappings, want %d", len(ms), len(wants))
	}
	for i, w := range wants {
		eq(t, "mapping", want{ms[i].Kind, ms[i].AnonName, ms[i].Path}, w)
	}
	eq(t, "32-bit addresses", [2]uint64{ms[5].Start, ms[5].End}, [2]uint64{0xffff0000, 0xffff1000})
}

func TestParseMapsErrors(t *testing.T) {
	good := "00400000-00401000 r-xp 00000000 08:01 42 /bin/x\n"
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"range", good + "00400000 r-xp 00000000 08:01 42\n", 2, int64(len(good)), "bad address range"},
		{"reversed", "2000-1000 r-xp 0 08:01 42\n", 1, 0, "bad address range"},
		{"hex", "1000-2g00 r-xp 0 08:01 42\n", 1, 0, "bad address range"},
		{"overflow", "10000000000000000-10000000000000001 r-xp 0 08:01 42\n", 1, 0, "bad address range"},
		{"perms", good + good + "1000-2000 rwxq 0 08:01 42\n", 3, int64(2 * len(good)), "bad permissions"},
		{"perms len", "1000-2000 rw 0 08:01 42\n", 1, 0, "bad permissions"},
		{"offset", "1000-2000 rw-p zz 08:01 42\n", 1, 0, "bad offset"},
		{"dev", "1000-2000 rw-p 0 0801 42\n", 1, 0, "bad device"},
		{"inode", "1000-2000 rw-p 0 08:01 -1\n", 1, 0, "bad inode"},
		{"missing inode", "1000-2000 rw-p 0 08:01\n", 1, 0, "bad inode"},
		{"smaps key in maps", good + "Rss: 4 kB\n", 2, int64(len(good)), "bad address range"},
		{"long line", good + "1000-2000 rw-p 0 08:01 42 /" + strings.Repeat("a", MaxLineLen) + "\n", 2, int64(len(good)), "limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseMaps([]byte(c.in))
			pe := wantParseError(t, err, "maps", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
	_, err := ParseMaps([]byte(good + "1000-2000 rw-p 0 08:01 42 /" + strings.Repeat("a", MaxLineLen)))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("long line: %v does not match ErrTooLarge", err)
	}
}

func TestParseSmapsErrors(t *testing.T) {
	hdr := "1000-2000 rw-p 00000000 00:00 0 \n"
	for _, c := range []struct {
		name, in string
		line     int
		off      int64
		msg      string
	}{
		{"key first", "Rss: 4 kB\n" + hdr, 1, 0, "before the first mapping"},
		{"no unit", hdr + "Rss: 4\n", 2, int64(len(hdr)), "bad Rss value"},
		{"bad unit", hdr + "Pss: 4 MB\n", 2, int64(len(hdr)), "bad Pss value"},
		{"kB overflow", hdr + "Swap: 18014398509481984 kB\n", 2, int64(len(hdr)), "bad Swap value"},
		{"thp", hdr + "THPeligible: 2\n", 2, int64(len(hdr)), "bad THPeligible"},
		{"pkey", hdr + "ProtectionKey: x\n", 2, int64(len(hdr)), "bad ProtectionKey"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSmaps([]byte(c.in))
			pe := wantParseError(t, err, "smaps", c.line, c.off)
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

// TestParseSmapsTolerates: what a newer or differently configured kernel
// may print must not be rejected.
func TestParseSmapsTolerates(t *testing.T) {
	in := "1000-3000 rw-p 00000000 00:00 0 \n" +
		"Size:                  8 kB\n" +
		"FutureKey:          123 MB\n" +
		"ProtectionKey:         3\n" +
		"VmFlags: rd wr zz ?? sd hg \n"
	ms, err := ParseSmaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "len", len(ms), 1)
	eq(t, "Size", ms[0].Size, uint64(8192))
	eq(t, "ProtectionKey", ms[0].ProtectionKey, 3)
	eq(t, "VmFlags", ms[0].VmFlags, VmRead|VmWrite|VmSoftDirty|VmHugePage)
	eq(t, "UnknownVmFlags", ms[0].UnknownVmFlags, []string{"zz", "??"})
	eq(t, "RawVmFlags", ms[0].RawVmFlags, "rd wr zz ?? sd hg")

	empty, err := ParseSmaps(nil)
	if err != nil || len(empty) != 0 {
		t.Errorf("ParseSmaps(nil) = %v, %v; want empty", empty, err)
	}
}

func TestVmFlagsTable(t *testing.T) {
	all := "rd wr ex sh mr mw me ms gd pf dw lo io sr rr dc de lf ac nr ht sf nl ar wf dd bt sd mm hg nh mg um uw mt mp ui ss dp sl gu"
	f, unknown := ParseVmFlags(all)
	if unknown != nil {
		t.Fatalf("unknown %q", unknown)
	}
	eq(t, "all flags", f, VmFlags(1<<numVmFlags-1))
	eq(t, "round trip", strings.Join(f.Mnemonics(), " "), all)
	if len(f.Words()) != numVmFlags {
		t.Errorf("Words has %d entries", len(f.Words()))
	}
	seen := map[string]bool{}
	for _, w := range f.Words() {
		if seen[w] {
			t.Errorf("duplicate word %q", w)
		}
		seen[w] = true
	}
	eq(t, "hg", LookupVmFlag("hg"), VmHugePage)
	eq(t, "hg word", VmHugePage.Words(), []string{"MADV_HUGEPAGE"})
	eq(t, "String", (VmRead | VmSealed).String(), "PROT_READ|mseal")
	eq(t, "zero String", VmFlags(0).String(), "0")
	eq(t, "unknown lookup", LookupVmFlag("zz"), VmFlags(0))
	eq(t, "bad lookup", LookupVmFlag("R"), VmFlags(0))
	eq(t, "Has", (VmRead | VmWrite).Has(VmRead|VmExec), false)
}

func TestKindString(t *testing.T) {
	eq(t, "vvar_vclock", KindVvarVclock.String(), "vvar_vclock")
	eq(t, "out of range", Kind(200).String(), "Kind(200)")
}

// BenchmarkParseSmaps parses a process with ~1,000 mappings (the captured
// smaps repeated) and reports the cost per mapping.
func BenchmarkParseSmaps(b *testing.B) {
	one := readTestdata(b, "target.smaps")
	data := bytes.Repeat(one, 27)
	n := 27 * 37
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ms, err := ParseSmaps(data)
		if err != nil || len(ms) != n {
			b.Fatal(err, len(ms))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/mapping")
}

func BenchmarkParseMaps(b *testing.B) {
	data := bytes.Repeat(readTestdata(b, "target.maps"), 27)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMaps(data); err != nil {
			b.Fatal(err)
		}
	}
}

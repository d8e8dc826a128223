package procfs

import "strings"

// VmFlags is the set of two-letter flags smaps prints on its "VmFlags:" line.
//
// The bit positions are this package's own, not the kernel's: the kernel's
// VM_* bit numbers differ between architectures and configurations, and only
// the mnemonics are ABI.
type VmFlags uint64

// One constant per mnemonic the kernel has printed (fs/proc/task_mmu.c,
// show_smap_vma_flags), including ones later removed, so that old captured
// smaps still parse to the same set.
const (
	VmRead        VmFlags = 1 << iota // rd
	VmWrite                           // wr
	VmExec                            // ex
	VmShared                          // sh
	VmMayRead                         // mr
	VmMayWrite                        // mw
	VmMayExec                         // me
	VmMayShare                        // ms
	VmGrowsDown                       // gd
	VmPFNMap                          // pf
	VmDenyWrite                       // dw (removed in 5.15)
	VmLocked                          // lo
	VmIO                              // io
	VmSeqRead                         // sr
	VmRandRead                        // rr
	VmDontCopy                        // dc
	VmDontExpand                      // de
	VmLockOnFault                     // lf
	VmAccount                         // ac
	VmNoReserve                       // nr
	VmHugeTLB                         // ht
	VmSync                            // sf
	VmNonLinear                       // nl (removed in 4.0)
	VmArch1                           // ar
	VmWipeOnFork                      // wf
	VmDontDump                        // dd
	VmArm64BTI                        // bt
	VmSoftDirty                       // sd
	VmMixedMap                        // mm
	VmHugePage                        // hg
	VmNoHugePage                      // nh
	VmMergeable                       // mg
	VmUffdMissing                     // um
	VmUffdWP                          // uw
	VmMTE                             // mt
	VmMPX                             // mp (removed in 5.6)
	VmUffdMinor                       // ui
	VmShadowStack                     // ss
	VmDroppable                       // dp
	VmSealed                          // sl
	VmMaybeGuard                      // gu (6.18: MADV_GUARD_INSTALL was used on it)

	numVmFlags = iota
)

type vmFlagInfo struct {
	mnemonic string
	word     string
}

// vmFlagTable is indexed by bit number. The words name what a user-space
// program did to get the flag (the syscall or madvise advice) where there is
// such a thing, since that is what a reader of `cryo maps` has to act on.
var vmFlagTable = [...]vmFlagInfo{
	{"rd", "PROT_READ"},
	{"wr", "PROT_WRITE"},
	{"ex", "PROT_EXEC"},
	{"sh", "MAP_SHARED"},
	{"mr", "may-read"},
	{"mw", "may-write"},
	{"me", "may-exec"},
	{"ms", "may-share"},
	{"gd", "MAP_GROWSDOWN"},
	{"pf", "PFN-map"},
	{"dw", "MAP_DENYWRITE"},
	{"lo", "mlock"},
	{"io", "memory-mapped-IO"},
	{"sr", "MADV_SEQUENTIAL"},
	{"rr", "MADV_RANDOM"},
	{"dc", "MADV_DONTFORK"},
	{"de", "dont-expand"},
	{"lf", "MLOCK_ONFAULT"},
	{"ac", "accounted"},
	{"nr", "MAP_NORESERVE"},
	{"ht", "MAP_HUGETLB"},
	{"sf", "MAP_SYNC"},
	{"nl", "remap_file_pages"},
	{"ar", "arch-specific"},
	{"wf", "MADV_WIPEONFORK"},
	{"dd", "MADV_DONTDUMP"},
	{"bt", "PROT_BTI"},
	{"sd", "soft-dirty"},
	{"mm", "mixed-map"},
	{"hg", "MADV_HUGEPAGE"},
	{"nh", "MADV_NOHUGEPAGE"},
	{"mg", "MADV_MERGEABLE"},
	{"um", "UFFDIO_REGISTER_MODE_MISSING"},
	{"uw", "UFFDIO_REGISTER_MODE_WP"},
	{"mt", "PROT_MTE"},
	{"mp", "MPX"},
	{"ui", "UFFDIO_REGISTER_MODE_MINOR"},
	{"ss", "shadow-stack"},
	{"dp", "MAP_DROPPABLE"},
	{"sl", "mseal"},
	{"gu", "MADV_GUARD_INSTALL"},
}

// Compile-time check that the table and the constants agree in length.
var _ [len(vmFlagTable)]struct{} = [numVmFlags]struct{}{}

// vmFlagBit maps a two-letter mnemonic to its flag. Indexing by the two
// letters keeps the hot smaps loop free of map lookups and hashing.
var vmFlagBit = func() (t [26 * 26]VmFlags) {
	for i, fi := range vmFlagTable {
		t[int(fi.mnemonic[0]-'a')*26+int(fi.mnemonic[1]-'a')] = 1 << i
	}
	return t
}()

// LookupVmFlag returns the flag for a mnemonic such as "hg", or 0 if the
// mnemonic is unknown.
func LookupVmFlag(mnemonic string) VmFlags {
	return lookupVmFlag([]byte(mnemonic))
}

func lookupVmFlag(m []byte) VmFlags {
	if len(m) != 2 || m[0] < 'a' || m[0] > 'z' || m[1] < 'a' || m[1] > 'z' {
		return 0
	}
	return vmFlagBit[int(m[0]-'a')*26+int(m[1]-'a')]
}

// Has reports whether every flag in want is set.
func (f VmFlags) Has(want VmFlags) bool { return f&want == want }

// Mnemonics returns the kernel's two-letter names of the set flags, in the
// package's bit order.
func (f VmFlags) Mnemonics() []string {
	var out []string
	for i, fi := range vmFlagTable {
		if f&(1<<i) != 0 {
			out = append(out, fi.mnemonic)
		}
	}
	return out
}

// Words returns each set flag in words, e.g. "MADV_HUGEPAGE" for hg.
func (f VmFlags) Words() []string {
	var out []string
	for i, fi := range vmFlagTable {
		if f&(1<<i) != 0 {
			out = append(out, fi.word)
		}
	}
	return out
}

// String returns the set flags in words, separated by '|', or "0".
func (f VmFlags) String() string {
	w := f.Words()
	if len(w) == 0 {
		return "0"
	}
	return strings.Join(w, "|")
}

// ParseVmFlags parses the value of a "VmFlags:" line. Mnemonics this package
// does not know (a newer kernel's, or the kernel's "??" for an unnamed bit)
// are returned in unknown, in the order printed, rather than rejected: a new
// flag must not make cryo unable to read smaps.
func ParseVmFlags(s string) (flags VmFlags, unknown []string) {
	return parseVmFlags([]byte(s))
}

func parseVmFlags(b []byte) (flags VmFlags, unknown []string) {
	for {
		var m []byte
		m, b = nextField(b)
		if len(m) == 0 {
			return flags, unknown
		}
		if f := lookupVmFlag(m); f != 0 {
			flags |= f
		} else if len(unknown) < maxUnknownVmFlags {
			unknown = append(unknown, string(m))
		}
	}
}

// maxUnknownVmFlags bounds the unknown list: the kernel prints at most one
// mnemonic per bit of an unsigned long.
const maxUnknownVmFlags = 64

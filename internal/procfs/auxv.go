package procfs

import (
	"encoding/binary"
	"fmt"
)

// AuxvPair is one entry of the ELF auxiliary vector.
type AuxvPair struct {
	Key, Value uint64
}

// Auxiliary vector keys cryo uses (include/uapi/linux/auxvec.h,
// arch/x86/include/uapi/asm/auxvec.h). Defined here rather than taken from
// x/sys/unix so that this package stays free of syscall bindings; spelled
// as in the kernel headers so that they can be grepped for.
const (
	AT_NULL         = 0
	AT_PHDR         = 3
	AT_PHENT        = 4
	AT_PHNUM        = 5
	AT_PAGESZ       = 6
	AT_BASE         = 7
	AT_ENTRY        = 9
	AT_HWCAP        = 16
	AT_CLKTCK       = 17
	AT_SECURE       = 23
	AT_RANDOM       = 25
	AT_HWCAP2       = 26
	AT_EXECFN       = 31
	AT_SYSINFO_EHDR = 33
	AT_MINSIGSTKSZ  = 51
)

const (
	auxvEntrySize    = 16
	maxAuxvEntries   = MaxSmallFileSize / auxvEntrySize
	auxvFileBaseName = "auxv"
)

// ParseAuxv parses /proc/PID/auxv of a 64-bit process: native-endian
// (key, value) pairs up to and excluding AT_NULL. Empty data (a kernel
// thread, a zombie) gives an empty result. Data after AT_NULL is ignored,
// because the kernel's saved vector is a fixed-size array.
func ParseAuxv(data []byte) ([]AuxvPair, error) { return parseAuxv(auxvFileBaseName, data) }

// AuxvPid reads and parses /proc/PID/auxv. It needs ptrace access to pid.
func AuxvPid(pid int) ([]AuxvPair, error) {
	return readParse(procPath(pid, "auxv"), MaxSmallFileSize, parseAuxv)
}

func parseAuxv(file string, data []byte) ([]AuxvPair, error) {
	if len(data) == 0 {
		return []AuxvPair{}, nil
	}
	if len(data)%auxvEntrySize != 0 {
		// Name the offset of the incomplete entry: that is where a
		// truncated read or a 32-bit (8-byte) vector shows.
		off := len(data) - len(data)%auxvEntrySize
		return nil, &ParseError{File: file, Offset: int64(off),
			Err: fmt.Errorf("%d bytes is not a whole number of %d-byte entries (trailing %d bytes)", len(data), auxvEntrySize, len(data)%auxvEntrySize)}
	}
	if len(data)/auxvEntrySize > maxAuxvEntries {
		return nil, &ParseError{File: file, Err: fmt.Errorf("%d bytes: %w", len(data), ErrTooLarge)}
	}
	out := make([]AuxvPair, 0, len(data)/auxvEntrySize)
	for off := 0; off < len(data); off += auxvEntrySize {
		k := binary.NativeEndian.Uint64(data[off:])
		if k == AT_NULL {
			return out, nil
		}
		out = append(out, AuxvPair{Key: k, Value: binary.NativeEndian.Uint64(data[off+8:])})
	}
	return nil, &ParseError{File: file, Offset: int64(len(data)), Err: fmt.Errorf("no AT_NULL terminator in %d entries", len(data)/auxvEntrySize)}
}

// AuxvValue returns the value of the first entry with key.
func AuxvValue(v []AuxvPair, key uint64) (uint64, bool) {
	for _, p := range v {
		if p.Key == key {
			return p.Value, true
		}
	}
	return 0, false
}

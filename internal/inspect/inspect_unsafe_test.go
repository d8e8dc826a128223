package inspect

import (
	"strconv"
	"unsafe"
)

// uintptrOf is the address of a mapping returned by unix.Mmap.
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func hex(v uint64) string { return strconv.FormatUint(v, 16) }

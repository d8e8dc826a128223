package ignored

import "unsafe"

var _ = unsafe.Sizeof(0)

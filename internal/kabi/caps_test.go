package kabi

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestCapsetArgsLayout(t *testing.T) {
	var a CapsetArgs
	if s, o := unsafe.Sizeof(a), unsafe.Offsetof(a.Data); s != 32 || o != 8 {
		t.Fatalf("CapsetArgs: size %d, data at %d; want 32 and 8", s, o)
	}
	a = NewCapsetArgs(Caps{Eff: 1 << unix.CAP_CHECKPOINT_RESTORE, Prm: 1<<unix.CAP_CHECKPOINT_RESTORE | 1, Inh: 2})
	if a.Header.Version != unix.LINUX_CAPABILITY_VERSION_3 || a.Data[1].Effective != 1<<8 || a.Data[1].Permitted != 1<<8 ||
		a.Data[0].Permitted != 1 || a.Data[0].Inheritable != 2 || a.Data[0].Effective != 0 {
		t.Fatalf("NewCapsetArgs: %+v", a)
	}
}

func TestCapNames(t *testing.T) {
	if got := CapNames(1<<unix.CAP_CHECKPOINT_RESTORE | 1<<unix.CAP_SYS_ADMIN); got != "CAP_SYS_ADMIN,CAP_CHECKPOINT_RESTORE" {
		t.Fatalf("CapNames: %q", got)
	}
	if got := CapNames(1 << 50); got != "cap_50" {
		t.Fatalf("CapNames(1<<50): %q", got)
	}
}

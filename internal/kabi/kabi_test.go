package kabi

import (
	"testing"
	"unsafe"
)

// The kernel rejects or misreads a struct of the wrong size, so pin each one
// to the size its UAPI header gives.
func TestSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"clone_args", unsafe.Sizeof(CloneArgs{}), 88},
		{"semid64_ds", unsafe.Sizeof(SemidDs{}), 104},
		{"sembuf", unsafe.Sizeof(Sembuf{}), 6},
		{"msqid64_ds", unsafe.Sizeof(MsqidDs{}), 120},
		{"sigaction", unsafe.Sizeof(Sigaction{}), 32},
		{"stack_t", unsafe.Sizeof(Stack{}), 24},
		{"itimerval", unsafe.Sizeof(Itimerval{}), 32},
		{"itimerspec", unsafe.Sizeof(Itimerspec{}), 32},
		{"sigevent", unsafe.Sizeof(Sigevent{}), 64},
		{"prctl_mm_map", unsafe.Sizeof(PrctlMmMap{}), 104},
		{"ptrace_peeksiginfo_args", unsafe.Sizeof(PeekSiginfoArgs{}), 16},
		{"ptrace_rseq_configuration", unsafe.Sizeof(RseqConfiguration{}), 24},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}

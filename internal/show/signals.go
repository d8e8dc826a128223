package show

import (
	"fmt"
	"math/bits"
	"strings"

	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
)

// Linux x86-64 signal numbers; the image stores numbers only.
var sigNames = [...]string{
	1: "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
	"SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT",
	"SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU",
	"SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
}

const (
	sigKill = 9
	sigStop = 19
	sigMax  = 64
)

func sigName(n int) string {
	if n > 0 && n < len(sigNames) {
		return sigNames[n]
	}
	if n >= 32 && n <= sigMax {
		return fmt.Sprintf("SIGRTMIN+%d", n-32) // glibc reserves 32 and 33, but the kernel numbers all
	}
	return fmt.Sprintf("signal %d", n)
}

// sigSet names the signals of a mask, or counts them when there are many.
func sigSet(mask uint64) string {
	if mask == 0 {
		return "none"
	}
	if n := bits.OnesCount64(mask); n > 3 {
		return fmt.Sprintf("%#x (%d signals)", mask, n)
	}
	var names []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) != 0 {
			names = append(names, sigName(i+1))
		}
	}
	return strings.Join(names, ",")
}

// handlers lists the sigactions that are not SIG_DFL. CRIU stores SIGMAX-2
// entries, skipping SIGKILL and SIGSTOP, which cannot have handlers; other
// lengths are read as one entry per signal from 1.
func handlers(sas []*criu_sa.SaEntry) []SigHandler {
	out := []SigHandler{}
	sig := 0
	for _, sa := range sas {
		sig++
		if len(sas) == sigMax-2 && (sig == sigKill || sig == sigStop) {
			sig++
		}
		h := sa.GetSigaction()
		if h == 0 { // SIG_DFL
			continue
		}
		hs := hex(h)
		if h == 1 {
			hs = "SIG_IGN"
		}
		out = append(out, SigHandler{Signal: sigName(sig), Handler: hs, Flags: saFlags(sa.GetFlags()), Mask: sigSet(sa.GetMask())})
	}
	return out
}

func saFlags(f uint64) string {
	var parts []string
	for _, b := range []struct {
		bit  uint64
		name string
	}{
		{0x1, "SA_NOCLDSTOP"}, {0x2, "SA_NOCLDWAIT"}, {0x4, "SA_SIGINFO"}, {0x04000000, "SA_RESTORER"},
		{0x08000000, "SA_ONSTACK"}, {0x10000000, "SA_RESTART"}, {0x40000000, "SA_NODEFER"}, {0x80000000, "SA_RESETHAND"},
	} {
		if f&b.bit != 0 {
			parts = append(parts, b.name)
			f &^= b.bit
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", f))
	}
	return strings.Join(parts, "|")
}

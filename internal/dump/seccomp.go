package dump

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// seccompFilters returns the BPF programs of pid's seccomp filters, most
// recently installed first (the order PTRACE_SECCOMP_GET_FILTER numbers them).
func seccompFilters(pid int) ([][]byte, error) {
	var out [][]byte
	for i := 0; i < 1024; i++ {
		f, err := kabi.SeccompFilter(pid, i)
		if errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("seccomp filter %d of %d: %w", i, pid, seccompHint(err))
		}
		out = append(out, f)
	}
	return nil, fmt.Errorf("process %d has more than 1024 seccomp filters", pid)
}

package dump

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Seccomp filters are per thread: a thread inherits its creator's chain
// when it is created, SECCOMP_FILTER_FLAG_TSYNC gives every thread of the
// process the caller's, and each filter installed is added on top of the
// installing thread's. So threads share the older part of their chains
// and may differ in the newer, and each thread's chain is read on its own.
//
// Whether two threads hold the very same filter (the kernel compares the
// pointers, is_ancestor, when a thread asks for TSYNC) no interface shows:
// kcmp has no type for it, and PTRACE_SECCOMP_GET_FILTER hands out copies.
// Filters with the same program and flags over the same older chain are
// taken for one, as CRIU does: that is what inheriting and TSYNC make, and
// a program that installs the same filter again on another thread, which
// would make two, is what this cannot tell apart.

// filter is one filter of a thread's chain.
type filter struct {
	prog  []byte
	flags uint64
}

// seccompChain returns the filters of thread tid, most recently installed
// first (the order PTRACE_SECCOMP_GET_FILTER numbers them).
func seccompChain(tid int) ([]filter, error) {
	var out []filter
	for i := 0; i < 1024; i++ {
		f, err := kabi.SeccompFilter(tid, i)
		if errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("seccomp filter %d of thread %d: %w", i, tid, seccompHint(err))
		}
		flags, err := kabi.SeccompMetadata(tid, i)
		if err != nil {
			return nil, fmt.Errorf("seccomp filter %d of thread %d: metadata: %w", i, tid, err)
		}
		out = append(out, filter{prog: f, flags: flags})
	}
	return nil, fmt.Errorf("thread %d has more than 1024 seccomp filters", tid)
}

// filterKey names a filter of the tree: its program and flags over the
// filter it was installed on (-1: none).
type filterKey struct {
	prev  int
	flags uint64
	prog  string
}

// seccompSet is the tree's seccomp.img: every filter once.
type seccompSet struct {
	entry *seccomp.SeccompEntry
	index map[filterKey]int
}

func newSeccompSet() *seccompSet {
	return &seccompSet{entry: &seccomp.SeccompEntry{}, index: map[filterKey]int{}}
}

// add adds a thread's chain (most recent first) and returns the index of
// its most recent filter, as CRIU's thread_core_entry.seccomp_filter
// names it. Each filter names the one below it in prev (0-based), or has
// none.
func (s *seccompSet) add(newestFirst []filter) uint32 {
	prev := -1
	for i := len(newestFirst) - 1; i >= 0; i-- {
		f := newestFirst[i]
		k := filterKey{prev: prev, flags: f.flags, prog: string(f.prog)}
		idx, ok := s.index[k]
		if !ok {
			e := &seccomp.SeccompFilter{Filter: f.prog, Flags: proto.Uint32(uint32(f.flags))}
			if prev >= 0 {
				e.Prev = proto.Uint32(uint32(prev))
			}
			idx = len(s.entry.SeccompFilters)
			s.entry.SeccompFilters = append(s.entry.SeccompFilters, e)
			s.index[k] = idx
		}
		prev = idx
	}
	return uint32(prev)
}

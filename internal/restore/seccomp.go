package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Seccomp filters come back as the threads shared them (dump's seccomp.go
// says what sharing is and how the image records it). The kernel makes
// two threads hold one filter in two ways only: one creates the other
// after installing it, or it installs it with SECCOMP_FILTER_FLAG_TSYNC,
// which hands it to every thread of the process. So:
//
//   - filters every thread has, from the oldest up (the process's common
//     chain), go in through the leader with TSYNC, and each thread's own
//     above them through that thread; this needs nothing but the right to
//     install a filter, and happens with the credentials (creds.go), last,
//     so that the filters judge as few of restore's calls as possible;
//   - a filter shared by some threads but not all can only come from
//     creation: the threads are then made by the thread holding their
//     shared part (createThreadsInheriting), right after that part is
//     installed. Restore's later calls would be judged by those filters,
//     so this needs PTRACE_O_SUSPEND_SECCOMP (CAP_SYS_ADMIN, and cryo
//     itself without seccomp); without it, such sharing is refused.

// seccompPlan says how one process's filters go in.
type seccompPlan struct {
	// chains are each thread's filters (seccomp.img indices), oldest
	// first; nil for a thread without filters.
	chains [][]int
	// common is how many of the oldest filters every thread holds: the
	// leader installs them with TSYNC.
	common int
	// inherit: threads are made by the thread that holds their shared
	// filters, each installed as the threads are made.
	inherit bool
}

// planSeccomp reads the process's filters and chooses how they go in; nil
// if no thread has any.
func (r *restorer) planSeccomp() (*seccompPlan, error) {
	n := len(r.l.cores)
	p := &seccompPlan{chains: make([][]int, n)}
	any := false
	for i, core := range r.l.cores {
		tc := core.GetThreadCore()
		if tc.GetSeccompMode() != 2 {
			continue
		}
		if tc.SeccompFilter == nil {
			return nil, fmt.Errorf("thread %d: seccomp mode filter, but no filter", r.l.tree.Threads[i])
		}
		chain, err := r.filterChain(int(tc.GetSeccompFilter()))
		if err != nil {
			return nil, fmt.Errorf("thread %d: %w", r.l.tree.Threads[i], err)
		}
		p.chains[i] = chain
		any = true
	}
	if !any {
		return nil, nil
	}
	// The common chain: as long a start as every thread has.
	p.common = len(p.chains[0])
	for _, ch := range p.chains {
		k := 0
		for k < p.common && k < len(ch) && ch[k] == p.chains[0][k] {
			k++
		}
		p.common = k
	}
	// Above it, a filter held by more than one thread was inherited.
	holders := map[int][]uint32{}
	for i, ch := range p.chains {
		for _, f := range ch[p.common:] {
			holders[f] = append(holders[f], r.l.tree.Threads[i])
		}
	}
	for f, tids := range holders {
		if len(tids) < 2 {
			continue
		}
		if !canSuspendSeccomp() {
			return nil, fmt.Errorf("threads %v share seccomp filter %d, which other threads lack: they can be given it only by being made after it, and restore's calls that follow would then be judged by it (suspending seccomp for them needs CAP_SYS_ADMIN): %w",
				tids, f, ErrNotSupported)
		}
		p.inherit = true
		p.common = 0 // the creation order gives the common chain too
	}
	return p, nil
}

// canSuspendSeccomp says whether the restore's tasks are seized with
// PTRACE_O_SUSPEND_SECCOMP: cryo holds CAP_SYS_ADMIN and runs without
// seccomp itself (kernel/ptrace.c, ptrace_setoptions).
var canSuspendSeccomp = sync.OnceValue(func() bool {
	own, err := procfs.OwnCaps()
	if err != nil || !own.Has(unix.CAP_SYS_ADMIN) {
		return false
	}
	st, err := procfs.StatusPid(os.Getpid())
	return err == nil && st.Seccomp == 0
})

// filterChain returns the filter idx and those below it, oldest first.
// CRIU's seccomp_filter.prev is the index of the filter below, if any.
func (r *restorer) filterChain(idx int) ([]int, error) {
	if r.l.seccomp == nil {
		return nil, fmt.Errorf("seccomp filter %d, but no seccomp.img", idx)
	}
	fs := r.l.seccomp.GetSeccompFilters()
	var chain []int
	for i := idx; ; {
		if i < 0 || i >= len(fs) || len(chain) >= len(fs) {
			return nil, fmt.Errorf("seccomp.img: bad filter chain at %d", i)
		}
		chain = append(chain, i)
		if fs[i].Prev == nil {
			break
		}
		i = int(fs[i].GetPrev())
	}
	for a, b := 0, len(chain)-1; a < b; a, b = a+1, b-1 {
		chain[a], chain[b] = chain[b], chain[a]
	}
	return chain, nil
}

// installFilter installs filter idx of seccomp.img in thread t, with
// SECCOMP_FILTER_FLAG_TSYNC if tsync.
func (r *restorer) installFilter(t *inject.Task, idx int, tsync bool) error {
	f := r.l.seccomp.GetSeccompFilters()[idx]
	prog := f.GetFilter()
	if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > 4096 {
		return fmt.Errorf("seccomp.img: filter %d of %d bytes", idx, len(prog))
	}
	flags := uint64(f.GetFlags())
	const tsyncFlag = 1 // SECCOMP_FILTER_FLAG_TSYNC
	if flags&^uint64(unix.SECCOMP_FILTER_FLAG_LOG|unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW) != 0 {
		return fmt.Errorf("seccomp.img: filter %d has flags %#x", idx, flags)
	}
	if tsync {
		flags |= tsyncFlag
	}
	c := r.c
	pp, err := c.arg(prog)
	if err != nil {
		return err
	}
	var fprog [16]byte
	binary.LittleEndian.PutUint16(fprog[0:], uint16(len(prog)/8))
	binary.LittleEndian.PutUint64(fprog[8:], pp)
	fp, err := c.arg(fprog[:])
	if err != nil {
		return err
	}
	ret, err := c.call(t, "seccomp", unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, fp)
	if err != nil {
		return err
	}
	if tsync && ret != 0 {
		// TSYNC returns the first thread it could not give the filter.
		return fmt.Errorf("seccomp TSYNC of filter %d: thread %d holds filters of its own", idx, ret)
	}
	return nil
}

// installSeccomp installs thread i's filters at the credentials stage:
// the common chain through the leader with TSYNC, then the thread's own.
// Nothing is left to do if the threads were made with their filters.
func (r *restorer) installSeccomp(t *inject.Task, i int) error {
	p := r.seccomp
	if p == nil || p.inherit || p.chains[i] == nil {
		return nil
	}
	if i == 0 {
		for _, f := range p.chains[0][:p.common] {
			if err := r.installFilter(t, f, len(r.c.threads) > 1); err != nil {
				return err
			}
		}
	}
	for _, f := range p.chains[i][p.common:] {
		if err := r.installFilter(t, f, false); err != nil {
			return err
		}
	}
	return nil
}

// createThreadsInheriting makes the threads in the order their filters
// were shared: walking the filters as a tree from the oldest, each thread
// is made by one holding exactly the filters it shares with others, and
// the holder of a filter installs it before making the threads that share
// it. The leader exists already, and goes last down its own branch.
func (r *restorer) createThreadsInheriting(p *seccompPlan) error {
	c := r.c
	tids := r.l.tree.Threads
	final := make([]int, len(tids)) // each thread's newest filter; -1: none
	kids := map[int][]int{}         // filter → filters installed on it
	seen := map[[2]int]bool{}
	for i, ch := range p.chains {
		final[i] = -1
		prev := -1
		for _, f := range ch {
			if !seen[[2]int{prev, f}] {
				seen[[2]int{prev, f}] = true
				kids[prev] = append(kids[prev], f)
			}
			prev = f
		}
		final[i] = prev
	}
	for _, k := range kids {
		sort.Ints(k)
	}
	// under says whether thread i's chain goes through filter f.
	under := func(i, f int) bool {
		for _, g := range p.chains[i] {
			if g == f {
				return true
			}
		}
		return f == -1
	}
	threads := make([]*inject.Task, len(tids))
	threads[0] = c.leader
	slack := map[int]uint64{0: c.slack} // each creator's timer slack
	var walk func(node, holder int) error
	walk = func(node, holder int) error {
		make1 := func(i int) error {
			cur := slack[holder]
			t, err := r.cloneThread(threads[holder], &cur, tids[i])
			if err != nil {
				return err
			}
			slack[holder] = cur
			slack[i] = cur // a new thread's slack is its creator's
			threads[i] = t
			return nil
		}
		for i := range tids {
			if threads[i] == nil && final[i] == node {
				if err := make1(i); err != nil {
					return err
				}
			}
		}
		own := -1
		for _, f := range kids[node] {
			if under(holder, f) {
				own = f // the holder's own branch, last
				continue
			}
			first := -1
			for i := range tids {
				if threads[i] == nil && under(i, f) {
					first = i
					break
				}
			}
			if first < 0 {
				return fmt.Errorf("seccomp filter %d: no thread left to hold it", f)
			}
			if err := make1(first); err != nil {
				return err
			}
			if err := r.installFilter(threads[first], f, false); err != nil {
				return err
			}
			if err := walk(f, first); err != nil {
				return err
			}
		}
		if own >= 0 {
			if err := r.installFilter(threads[holder], own, false); err != nil {
				return err
			}
			return walk(own, holder)
		}
		return nil
	}
	if err := walk(-1, 0); err != nil {
		return err
	}
	c.slack = slack[0]
	c.threads = threads
	return nil
}

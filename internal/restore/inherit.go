package restore

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
)

// trimInherited readies the address space a child got from its parent by
// fork: VMAs the child inherited (meta.Inheritable) stay, with their pages;
// every other VMA of the parent goes. It returns the kept VMAs by start, and
// whether the vdso stays where the child had it.
func (r *restorer) trimInherited(parent *restorer) (map[uint64]bool, bool, error) {
	c := r.c
	kept := map[uint64]bool{}
	byStart := map[uint64]int{}
	for i, e := range r.l.mm.GetVmas() {
		byStart[e.GetStart()] = i
	}
	vdsoSame := sameVdso(parent.l.mm.GetVmas(), r.l.mm.GetVmas())
	// The munmaps of disjoint ranges are independent: one batch, and one
	// munmap for adjacent VMAs that all go.
	b := c.batch()
	var lo, hi uint64
	flush := func() {
		if hi == 0 {
			return
		}
		start, end := lo, hi
		b.Add("munmap", unix.SYS_MUNMAP, start, end-start).
			Describe(func() string { return fmt.Sprintf("munmap the parent's %#x-%#x", start, end) })
		hi = 0
	}
	for _, pe := range parent.l.mm.GetVmas() {
		if has(pe, kabi.VMA_AREA_VSYSCALL) {
			continue
		}
		if has(pe, kabi.VMA_AREA_VDSO) || has(pe, kabi.VMA_AREA_VVAR) {
			if vdsoSame {
				flush()
				continue
			}
		} else if i, ok := byStart[pe.GetStart()]; ok && meta.Inheritable(pe, r.l.mm.GetVmas()[i]) {
			kept[pe.GetStart()] = true
			flush()
			continue
		}
		if hi != 0 && hi == pe.GetStart() {
			hi = pe.GetEnd()
			continue
		}
		flush()
		lo, hi = pe.GetStart(), pe.GetEnd()
	}
	flush()
	return kept, vdsoSame, b.Run()
}

// sameVdso says whether parent and child have [vvar]/[vdso] at the same
// addresses, so the child can keep what it inherited.
func sameVdso(p, c []*vma.VmaEntry) bool {
	var a, b []uint64
	for _, e := range p {
		if has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
			a = append(a, e.GetStart(), e.GetEnd())
		}
	}
	for _, e := range c {
		if has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
			b = append(b, e.GetStart(), e.GetEnd())
		}
	}
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// resident returns the pages a restored process has in its private memory:
// those written from its image and those it inherited, as sorted runs.
func resident(l *loaded, pid int) [][2]uint64 {
	var runs [][2]uint64
	for _, e := range l.pagemap {
		runs = append(runs, [2]uint64{e.GetVaddr(), e.GetNrPages()})
	}
	runs = append(runs, l.meta.Inherited[pid]...)
	sort.Slice(runs, func(i, j int) bool { return runs[i][0] < runs[j][0] })
	return runs
}

// zapUninherited drops, in the kept VMAs of a child, the pages its parent
// has but it had not: after fork it would otherwise see the parent's page
// where it had none (zeros, or the file's page). MADV_DONTNEED gives back
// exactly that.
func (r *restorer) zapUninherited(parent *restorer, maps []mapping) error {
	// The ranges are disjoint, the calls independent: one batch.
	b := r.c.batch()
	have := resident(r.l, r.c.pid)
	for _, pr := range resident(parent.l, parent.c.pid) {
		for _, m := range maps {
			if !m.kept || m.shmem {
				continue
			}
			lo, hi := max(pr[0], m.e.GetStart()), min(pr[0]+pr[1]*pageSize, m.e.GetEnd())
			for _, gap := range subtract(lo, hi, have) {
				b.Add("madvise(MADV_DONTNEED)", unix.SYS_MADVISE, gap[0], gap[1]-gap[0], unix.MADV_DONTNEED).
					Describe(func() string {
						return fmt.Sprintf("madvise(MADV_DONTNEED) of the parent's pages %#x-%#x", gap[0], gap[1])
					})
			}
		}
	}
	return b.Run()
}

// subtract returns the parts of [lo, hi) that no run of have (sorted page
// runs: address, count) covers.
func subtract(lo, hi uint64, have [][2]uint64) [][2]uint64 {
	if lo >= hi {
		return nil
	}
	var out [][2]uint64
	i := sort.Search(len(have), func(i int) bool { return have[i][0]+have[i][1]*pageSize > lo })
	for ; i < len(have) && lo < hi; i++ {
		s, e := have[i][0], have[i][0]+have[i][1]*pageSize
		if s >= hi {
			break
		}
		if s > lo {
			out = append(out, [2]uint64{lo, s})
		}
		lo = max(lo, e)
	}
	if lo < hi {
		out = append(out, [2]uint64{lo, hi})
	}
	return out
}

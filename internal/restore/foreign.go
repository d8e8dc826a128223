package restore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Images another tool wrote (CRIU's). They have no cryo-meta.json, which
// tells restore what CRIU's entries cannot say; restore derives what it can
// from the image and refuses, by name, what it cannot restore without it:
//
//   - the machine: the cores' (imageset.Load takes x86_64 only);
//   - the vdso: CRIU records no hash of its code, only its VMAs; restore
//     takes the image's vdso to be this kernel's if its [vdso] and [vvar]
//     are the sizes this kernel's are (what CRIU itself checks), and
//     refuses otherwise;
//   - private VMAs that are read-only but were writable (VM_ACCOUNT,
//     meta.AccountedReadOnly): those that have pages of their own in the
//     image, which only a write while they were writable gave them
//     (relocated RELRO) — a debugger's poke would too, and a VMA made
//     read-only before it was written has none: that much is a guess, said
//     in the log;
//   - pages a child shares copy-on-write with its parent (meta.Inherited):
//     not derived, so an image of more than one process is refused;
//   - what meta.Task records per thread (audit session, affinity, ioprio,
//     timer slack, uclamp, MCE policy, pending wait reports...): CRIU does
//     not record or restore them either; the threads get what a thread
//     nothing set has, as a CRIU restore would give them, and the log says
//     so.
//
// Every check of the image itself is the same as for cryo's
// (docs/security.md): nothing here trusts the image further.

// foreignMeta derives the note of an image cryo did not write.
func foreignMeta(set *imageset.Set) (*meta.Meta, error) {
	if n := len(set.Procs); n > 1 {
		return nil, &image.FormatError{File: imageset.Pstree.Name, Offset: -1, Err: fmt.Errorf(
			"%d processes in an image cryo did not write: which pages a child shares copy-on-write with its parent is not recorded there, and restoring a tree without it is not done yet: %w", n, ErrNotSupported)}
	}
	m := &meta.Meta{Machine: "x86_64", AccountedReadOnly: map[int][]uint64{}}
	for _, p := range set.Procs {
		if p.Zombie {
			continue
		}
		for _, e := range p.Mm.GetVmas() {
			if e.GetFlags()&unix.MAP_SHARED != 0 || e.GetProt()&unix.PROT_WRITE != 0 ||
				has(e, kabi.VMA_AREA_VSYSCALL) || has(e, kabi.VMA_AREA_VDSO) || has(e, kabi.VMA_AREA_VVAR) {
				continue
			}
			for _, pe := range p.Pagemap {
				if pe.GetVaddr() < e.GetEnd() && pe.GetVaddr()+pe.GetNrPages()*4096 > e.GetStart() {
					m.AccountedReadOnly[int(p.Pid())] = append(m.AccountedReadOnly[int(p.Pid())], e.GetStart())
					break
				}
			}
		}
	}
	return m, nil
}

// checkForeignVdso refuses an image from another tool whose [vdso] or
// [vvar] differ in size from this kernel's.
func (r *restorer) checkForeignVdso() error {
	maps, err := procfs.MapsPid(os.Getpid())
	if err != nil {
		return err
	}
	var ownVdso, ownVvar uint64
	for _, m := range maps {
		switch m.Kind {
		case procfs.KindVdso:
			ownVdso += m.End - m.Start
		case procfs.KindVvar, procfs.KindVvarVclock:
			ownVvar += m.End - m.Start
		}
	}
	for _, p := range r.l.procs {
		if p.zombie {
			continue
		}
		var vdso, vvar uint64
		for _, e := range p.mm.GetVmas() {
			switch {
			case has(e, kabi.VMA_AREA_VDSO):
				vdso += e.GetEnd() - e.GetStart()
			case has(e, kabi.VMA_AREA_VVAR):
				vvar += e.GetEnd() - e.GetStart()
			}
		}
		if vdso != 0 && (vdso != ownVdso || vvar != ownVvar) {
			return fmt.Errorf("process %d of an image cryo did not write has a [vdso] of %d bytes and [vvar] of %d, this kernel's are %d and %d: the image comes from another kernel: restoring across vdso versions: %w",
				p.tree.GetPid(), vdso, vvar, ownVdso, ownVvar, ErrNotSupported)
		}
	}
	return nil
}

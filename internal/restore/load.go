package restore

import (
	"fmt"
	"time"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/meta"
	"github.com/cryo-project/cryo/internal/procfs"
)

// ErrNotSupported marks image content this version cannot restore.
var ErrNotSupported = errs.ErrNotSupported

// ErrPidTaken reports that a pid the image needs is in use.
var ErrPidTaken = errs.ErrPidTaken

// loaded is a whole image, read and checked.
type loaded struct {
	dir     *image.Dir
	meta    *meta.Meta
	tree    *pstree.PstreeEntry
	cores   []*core.CoreEntry // threads in pstree order, leader first
	mm      *mm.MmEntry
	pagemap []*pagemap.PagemapEntry
	pagesID uint32
	files   map[uint32]*fdinfo.FileEntry
	fds     []*fdinfo.FdinfoEntry
	fs      *fs.FsEntry
	seccomp *seccomp.SeccompEntry
	// procs are the tree's processes, parents before children, each a view
	// of this image with its own pstree entry, cores, mm, pages and fds.
	procs  []*loaded
	zombie bool
	// set is the whole image, as imageset loaded it.
	set *imageset.Set
}

// load reads the whole image; imageset.Load checks that its parts agree.
func load(path string) (*loaded, error) {
	set, err := imageset.Load(path)
	if err != nil {
		return nil, err
	}
	dir := set.Dir
	if set.Meta == nil {
		if !dir.Foreign() {
			return nil, &image.FormatError{File: meta.Name, Offset: -1, Err: fmt.Errorf("missing: %w", image.ErrIncomplete)}
		}
		if set.Meta, err = foreignMeta(set); err != nil {
			return nil, err
		}
	}
	l := &loaded{dir: dir, meta: set.Meta, files: set.Files, seccomp: set.Seccomp, set: set}
	for _, p := range set.Procs {
		l.procs = append(l.procs, &loaded{
			dir: dir, meta: set.Meta, files: set.Files, seccomp: set.Seccomp,
			tree: p.Tree, cores: p.Cores, zombie: p.Zombie,
			mm: p.Mm, pagemap: p.Pagemap, pagesID: p.PagesID, fds: p.Fds, fs: p.Fs,
		})
	}
	// The root's view doubles as the tree's for the code that restores one
	// process.
	root := l.procs[0]
	l.tree, l.cores, l.mm, l.pagemap, l.pagesID, l.fds, l.fs = root.tree, root.cores, root.mm, root.pagemap, root.pagesID, root.fds, root.fs
	return l, nil
}

// exiting says whether pid belongs to a process on its way out: a zombie,
// dead, or past the start of exit (PF_EXITING).
func exiting(pid int) bool {
	st, err := procfs.StatPid(pid)
	if err != nil {
		return false
	}
	const pfExiting = 0x4
	return st.State == 'Z' || st.State == 'X' || st.Flags&pfExiting != 0
}

// checkPids fails with the holder's name if a pid or tid the image needs is
// taken. clone3 would say EEXIST later anyway, but only after a stub was
// started, and without saying who holds it.
func (l *loaded) checkPids() error {
	for _, p := range l.procs {
		for _, tid := range p.tree.Threads {
			if err := pidFree(int(tid)); err != nil {
				return err
			}
		}
	}
	return nil
}

func pidFree(pid int) error {
	// A process killed by a dump that just ended may still be tearing down
	// its memory, or be a zombie its parent is about to reap: give it a
	// moment before calling its pid taken.
	for deadline := time.Now().Add(2 * time.Second); exiting(pid) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	st, err := procfs.StatusPid(pid)
	if err != nil {
		return nil // no such pid (or gone meanwhile): free
	}
	holder := st.Name
	// A thread's /proc entry is reachable by its tid too: name its process.
	if st.Tgid != pid {
		return fmt.Errorf("pid %d is taken by a thread of process %d (%s): %w", pid, st.Tgid, holder, ErrPidTaken)
	}
	return fmt.Errorf("pid %d is taken by process %d (%s): %w", pid, pid, holder, ErrPidTaken)
}

package restore

import (
	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/inject"
)

// proc is the process being built as package files sees it: every call
// goes to its leader, with arguments in the scratch area.
type proc struct{ c *child }

func (r *restorer) proc() files.Proc { return proc{r.c} }

func (p proc) Pid() int { return p.c.pid }
func (p proc) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	return p.c.call(p.c.leader, name, nr, args...)
}
func (p proc) Arg(b []byte) (uint64, error)           { return p.c.arg(b) }
func (p proc) Str(s string) (uint64, error)           { return p.c.str(s) }
func (p proc) Out(addr uint64, n int) ([]byte, error) { return p.c.out(addr, n) }
func (p proc) Batch() *inject.Batch                   { return p.c.batch() }

// openFile opens the regular file of entry f in the process, for a
// mapping or the exe link (through its ghost if it was deleted).
func (r *restorer) openFile(f *fdinfo.FileEntry, flags uint32) (uint64, error) {
	return r.t.files.OpenPath(r.proc(), f, flags)
}

// memfdFd returns the process's fd on memfd inode id, for a mapping.
func (r *restorer) memfdFd(id uint32) (uint64, error) { return r.t.files.MemfdFd(r.proc(), id) }

// restoreFs puts back root (chroot), cwd and umask, in that order.
func (r *restorer) restoreFs() error {
	c := r.c
	if root := r.l.files[r.l.fs.GetRootId()]; root != nil && root.GetReg().GetName() != "/" {
		p, err := c.str(root.GetReg().GetName())
		if err != nil {
			return err
		}
		if _, err := c.call(c.leader, "chroot", unix.SYS_CHROOT, p); err != nil {
			return err
		}
	}
	if cwd := r.l.files[r.l.fs.GetCwdId()]; cwd != nil {
		p, err := c.str(cwd.GetReg().GetName())
		if err != nil {
			return err
		}
		if _, err := c.call(c.leader, "chdir "+cwd.GetReg().GetName(), unix.SYS_CHDIR, p); err != nil {
			return err
		}
	}
	_, err := c.call(c.leader, "umask", unix.SYS_UMASK, uint64(r.l.fs.GetUmask()))
	return err
}

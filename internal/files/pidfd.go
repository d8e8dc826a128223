package files

import (
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/procfs"
)

// pidfds on processes of the dumped tree.
var pidfdKind = Kind{
	Name:    "pidfd",
	Type:    fdinfo.FdTypes_PIDFD,
	Dump:    func() dumper { return pidfdDump{} },
	Restore: func() opener { return pidfdOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("anon_inode:[pidfd] pid %d", f.GetPidfd().GetNspid())}
	},
}

type pidfdDump struct{}

func (pidfdDump) match(fd *Fd) bool { return fd.Link == "anon_inode:[pidfd]" }

// dump records which process a pidfd refers to. Restore reopens it
// with pidfd_open on the same pid, which names the same process only if
// that process is restored with the tree: a pidfd on a process outside the
// tree is refused (a live outside process could be reopened, but nothing
// would prove it is still the one the pidfd meant once the pid is reused),
// and so is one whose process is gone, reaped, as nothing could re-create
// a pidfd on a dead process without forking one to let die.
func (pidfdDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	pi := fd.Info.Pidfd
	if pi == nil {
		return 0, fmt.Errorf("fdinfo has no Pid line")
	}
	switch {
	case pi.Pid == -1:
		return 0, fmt.Errorf("a pidfd on a process that has exited and been reaped: %w", errs.ErrNotSupported)
	case pi.Pid <= 0:
		return 0, fmt.Errorf("a pidfd on a process of another pid namespace: %w", errs.ErrNotSupported)
	case len(pi.NSpid) > 1:
		return 0, fmt.Errorf("a pidfd on pid %d, in a nested pid namespace (NSpid %v): %w", pi.Pid, pi.NSpid, errs.ErrNotSupported)
	}
	if err := inTree(pi.Pid, d.opts.Root); err != nil {
		return 0, err
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIDFD.Enum(),
		Pidfd: &pidfd.PidfdEntry{
			Ino: proto.Uint32(uint32(fd.Stat.Ino)), Flags: proto.Uint32(fd.Flags),
			Nspid: proto.Int32(int32(pi.Pid)), Fown: noOwner(),
		},
	}), nil
}

// inTree checks that pid is a process of the dumped tree: the root or one
// of its descendants (the tree is frozen: no process can leave or join
// it), alive or zombie. A thread other than a leader is refused: restore
// opens pidfds before it re-creates threads.
func inTree(pid, root int) error {
	st, err := procfs.StatusPid(pid)
	if err != nil {
		return fmt.Errorf("a pidfd on pid %d: %w", pid, err)
	}
	if st.Tgid != pid {
		return fmt.Errorf("a pidfd on thread %d of process %d (PIDFD_THREAD): %w", pid, st.Tgid, errs.ErrNotSupported)
	}
	for q, hops := pid, 0; ; hops++ {
		if q == root {
			return nil
		}
		if q <= 1 || hops > 1<<16 {
			return fmt.Errorf("a pidfd on pid %d, which is not in the dumped tree of %d: %w", pid, root, errs.ErrNotSupported)
		}
		s, err := procfs.StatusPid(q)
		if err != nil {
			return fmt.Errorf("a pidfd on pid %d: ancestor %d: %w", pid, q, err)
		}
		q = s.PPid
	}
}

type pidfdOpen struct{}

// open reopens a pidfd on a process of the tree, which exists (with
// its pid) by the time files are restored: the dump refused pidfds on
// anything else, so a pid outside the image means a corrupt image. A pidfd
// on a process that is a zombie in the image is opened while it still
// runs, before it dies, and so refers to the zombie as the original did.
func (pidfdOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	pf := f.GetPidfd()
	pid := pf.GetNspid()
	if pid <= 0 || !r.inImage(pid) {
		return 0, corrupt("pidfd (file %d) on pid %d, not a process of the image", f.GetId(), pid)
	}
	// PIDFD_NONBLOCK is O_NONBLOCK, PIDFD_THREAD (6.9) is O_EXCL; the dump
	// only took thread pidfds on leaders.
	flags := uint64(pf.GetFlags() & (unix.O_NONBLOCK | unix.O_EXCL))
	return p.Call(fmt.Sprintf("pidfd_open %d", pid), unix.SYS_PIDFD_OPEN, uint64(pid), flags)
}

// inImage says whether pid is a process of the image.
func (r *Restorer) inImage(pid int32) bool {
	for _, p := range r.set.Procs {
		if int32(p.Pid()) == pid {
			return true
		}
	}
	return false
}

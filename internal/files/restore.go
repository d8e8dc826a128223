package files

import (
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// Proc is a process being restored, as the kinds use it: package restore
// implements it over its injection layer. Every syscall runs in the
// process's leader, which is stopped under cryo's control.
type Proc interface {
	Pid() int
	// Call runs syscall nr with args and returns its result, or an error
	// naming name, the process and the errno. Arguments written with Arg
	// and Str are valid for the next Call only.
	Call(name string, nr uintptr, args ...uint64) (uint64, error)
	// Arg copies b where the next Call can read it and returns the address.
	Arg(b []byte) (uint64, error)
	// Str is Arg for a NUL-terminated string.
	Str(s string) (uint64, error)
	// Out reads n bytes at addr, which the last Call may have written.
	Out(addr uint64, n int) ([]byte, error)
}

// RestoreOptions is what a restore of files depends on beyond the image.
type RestoreOptions struct {
	// ShellJob attaches the image's terminals to the terminal of `cryo
	// restore` itself. The zero value refuses an image with terminals.
	ShellJob bool
	// FileLocks takes the image's file locks again (criu's --file-locks).
	// The zero value refuses an image that holds any.
	FileLocks bool
	// Inherit are the files given for the image's files whose other side
	// was outside the tree (criu's --inherit-fd), by key (InheritKey).
	Inherit map[string]*os.File
	// Kept are the tree's own ends of pipes to the outside that the
	// dump's keeper held (package keeper), by key: used where Inherit
	// gives none.
	Kept map[string]*os.File
	// SameBoot says the image was dumped since this machine booted: a
	// pipe's outside end may still be open, known by the pipe's inode.
	SameBoot bool
	// Log receives what the restore makes of pipes to the outside; nil
	// discards it.
	Log *slog.Logger
	// TCPEstablished restores the image's established TCP connections
	// (criu's --tcp-established), by TCP repair. The zero value refuses an
	// image that holds any, unless TCPClose.
	TCPEstablished bool
	// TCPClose restores them aborted instead (criu's --tcp-close): the
	// program's next call on one fails with ECONNABORTED.
	TCPClose bool
}

// Owner is the fd in process Pid that holds an open file description,
// which the other processes of the tree take with pidfd_getfd.
type Owner struct {
	Pid int
	Fd  uint64
}

// Restorer rebuilds the files of one image, process after process.
type Restorer struct {
	set    *imageset.Set
	opts   RestoreOptions
	kinds  map[fdinfo.FdTypes]opener
	order  []opener // in table order, for the hooks
	ghosts *ghosts
	// owners is the first fd of each file id, in the process that opened it.
	owners map[uint32]Owner
	procs  map[int]Proc
	// pidfds are each process's pidfds on the others, for Take.
	pidfds map[[2]int]uint64
	// base is, by pid, the lowest fd number above the image's fds.
	base map[int]uint64
	// locks are file-locks.img's entries, for TakeLocks.
	locks []imageLock
	// inherit are the given files (inherit.go), by key, in inheritOrder.
	inherit      map[string]*inherited
	inheritOrder []string
}

// NewRestorer reads what the kinds keep beside files.img and puts the
// image's deleted files back on disk for the processes to open. Call
// Cleanup when the restore is over, whatever its outcome.
func NewRestorer(set *imageset.Set, opts RestoreOptions) (*Restorer, error) {
	r := &Restorer{set: set, opts: opts, kinds: map[fdinfo.FdTypes]opener{},
		owners: map[uint32]Owner{}, procs: map[int]Proc{}, pidfds: map[[2]int]uint64{}, base: map[int]uint64{},
		inherit: map[string]*inherited{}}
	for _, k := range table {
		if k.Restore != nil {
			o := k.Restore()
			r.kinds[k.Type] = o
			r.order = append(r.order, o)
		}
	}
	for _, p := range set.Procs {
		var b uint64
		for _, fd := range p.Fds {
			b = max(b, uint64(fd.GetFd())+1)
		}
		r.base[int(p.Pid())] = b
	}
	for _, o := range r.order {
		if l, ok := o.(sideLoader); ok {
			if err := l.loadSide(r); err != nil {
				return nil, err
			}
		}
	}
	if err := r.loadLocks(); err != nil {
		return nil, err
	}
	if err := r.checkInherited(); err != nil {
		return nil, err
	}
	var err error
	if r.ghosts, err = prepareGhosts(set); err != nil {
		return nil, err
	}
	return r, nil
}

// restoreHalf returns the restore half of type T.
func restoreHalf[T opener](r *Restorer) T {
	for _, o := range r.order {
		if t, ok := o.(T); ok {
			return t
		}
	}
	panic(fmt.Sprintf("files: no restore half %T in the table", *new(T)))
}

// Cleanup removes the deleted files put back for the restore.
func (r *Restorer) Cleanup() {
	if r != nil {
		r.ghosts.cleanup()
		restoreHalf[*ttyOpen](r).closeCopies()
		restoreHalf[*inetOpen](r).closeConns()
	}
}

// GhostPath says where the contents of deleted file id are on disk during
// the restore.
func (r *Restorer) GhostPath(id uint32) (string, bool) {
	p, ok := r.ghosts.paths[id]
	return p, ok
}

func (r *Restorer) seen(p Proc) { r.procs[p.Pid()] = p }

// Park moves fd of p above every fd number of p's image, so that putting
// an image fd at its number never closes it, and returns its new number.
func (r *Restorer) Park(p Proc, fd uint64) (uint64, error) {
	r.seen(p)
	nfd, err := p.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, r.base[p.Pid()])
	if err != nil {
		return 0, err
	}
	p.Call("close", unix.SYS_CLOSE, fd)
	return nfd, nil
}

// Take gets, in p, the open file description that another process of the
// tree holds at o.Fd: pidfd_open + pidfd_getfd run by p itself. The new fd
// is close-on-exec.
func (r *Restorer) Take(p Proc, o Owner) (uint64, error) {
	r.seen(p)
	key := [2]int{p.Pid(), o.Pid}
	pfd, ok := r.pidfds[key]
	if !ok {
		var err error
		if pfd, err = p.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(o.Pid), 0); err != nil {
			return 0, err
		}
		if pfd, err = r.Park(p, pfd); err != nil {
			return 0, err
		}
		r.pidfds[key] = pfd
	}
	return p.Call(fmt.Sprintf("pidfd_getfd %d of %d", o.Fd, o.Pid), unix.SYS_PIDFD_GETFD, pfd, o.Fd, 0)
}

// RestoreFds rebuilds the fd table of p: every fd of the image at its
// number, with its flags and offset, and fds that shared an open file
// description sharing one again, across the tree.
func (r *Restorer) RestoreFds(p Proc, fds []*fdinfo.FdinfoEntry) error {
	r.seen(p)
	fds = append([]*fdinfo.FdinfoEntry(nil), fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
	first := map[uint32]uint64{} // file id → the fd of p that holds it
	opened := map[opener]map[uint64]*fdinfo.FileEntry{}
	for _, e := range fds {
		want := uint64(e.GetFd())
		f := r.set.Files[e.GetId()]
		cloexec := e.GetFlags()&unix.FD_CLOEXEC != 0
		if src, ok := first[e.GetId()]; ok {
			if err := dupTo(p, src, want, cloexec); err != nil {
				return err
			}
			continue
		}
		if o, ok := r.owners[e.GetId()]; ok && o.Pid != p.Pid() {
			// An open file description another process of the tree holds
			// (inherited, or passed): the very same one, not a new open.
			fd, err := r.Take(p, o)
			if err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
			if err := place(p, fd, want, cloexec); err != nil {
				return err
			}
			first[e.GetId()] = want
			continue
		}
		k := r.kinds[f.GetType()]
		if k == nil {
			return fmt.Errorf("fd %d of type %v: %w", want, f.GetType(), errs.ErrNotSupported)
		}
		fd, err := k.open(r, p, f)
		if err != nil {
			return fmt.Errorf("fd %d: %w", want, err)
		}
		if err := place(p, fd, want, cloexec); err != nil {
			return err
		}
		if err := r.restoreOwner(p, want, f); err != nil {
			return fmt.Errorf("fd %d: its owner: %w", want, err)
		}
		if f.GetType() == fdinfo.FdTypes_REG && f.GetReg().GetPos() != 0 {
			if _, err := p.Call("lseek", unix.SYS_LSEEK, want, f.GetReg().GetPos(), unix.SEEK_SET); err != nil {
				return fmt.Errorf("fd %d (%s): seek to %d: %w", want, f.GetReg().GetName(), f.GetReg().GetPos(), err)
			}
		}
		first[e.GetId()] = want
		r.owners[e.GetId()] = Owner{Pid: p.Pid(), Fd: want}
		if opened[k] == nil {
			opened[k] = map[uint64]*fdinfo.FileEntry{}
		}
		opened[k][want] = f
	}
	for _, k := range r.order {
		if d, ok := k.(processDoner); ok {
			if err := d.processDone(r, p, opened[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// place moves fd to number want (dup3, then close fd), with FD_CLOEXEC as
// asked.
func place(p Proc, fd, want uint64, cloexec bool) error {
	if fd == want {
		if !cloexec {
			if _, err := p.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, want, unix.F_SETFD, 0); err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
		}
		return nil
	}
	if err := dupTo(p, fd, want, cloexec); err != nil {
		return err
	}
	_, err := p.Call("close", unix.SYS_CLOSE, fd)
	return err
}

func dupTo(p Proc, src, want uint64, cloexec bool) error {
	fl := uint64(0)
	if cloexec {
		fl = unix.O_CLOEXEC
	}
	if _, err := p.Call("dup3", unix.SYS_DUP3, src, want, fl); err != nil {
		return fmt.Errorf("fd %d: %w", want, err)
	}
	return nil
}

// OpenPath opens the regular file or directory of entry f in p with
// flags, through its ghost copy if it was deleted: for mappings and the
// exe link, which restore opens besides fds.
func (r *Restorer) OpenPath(p Proc, f *fdinfo.FileEntry, flags uint32) (uint64, error) {
	r.seen(p)
	name := f.GetReg().GetName()
	if g, ok := r.ghosts.paths[f.GetId()]; ok {
		name = g
	}
	s, err := p.Str(name)
	if err != nil {
		return 0, err
	}
	// The dumped flags include how the file was created; opening must not
	// create or truncate anything.
	flags &^= unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | oTmpfileOnly
	return p.Call("open "+name, unix.SYS_OPENAT, atFdcwd, s, uint64(flags|unix.O_CLOEXEC), 0)
}

// oTmpfileOnly is __O_TMPFILE alone: unix.O_TMPFILE includes O_DIRECTORY,
// which a directory fd must keep.
const oTmpfileOnly = 0o20000000

// atFdcwd is AT_FDCWD as a syscall argument.
const atFdcwd = ^uint64(99) // -100

// Finish runs once every process of the tree has its files: the kinds'
// last steps (memfd seals, closing the sockets they made), then every fd
// the restore kept for sharing (pidfds and what the kinds parked) is
// closed, and the deleted files put back for the restore are unlinked.
func (r *Restorer) Finish() error {
	for _, k := range r.order {
		if d, ok := k.(treeDoner); ok {
			if err := d.treeDone(r); err != nil {
				return err
			}
		}
	}
	if err := r.finishInherited(); err != nil {
		return err
	}
	for key, fd := range r.pidfds {
		if p := r.procs[key[0]]; p != nil {
			if _, err := p.Call("close pidfd", unix.SYS_CLOSE, fd); err != nil {
				return err
			}
		}
	}
	r.pidfds = map[[2]int]uint64{}
	// Every process has opened the deleted files it holds: unlink them
	// now, before the program runs, so that it sees them deleted as they
	// were, never linked.
	r.ghosts.cleanup()
	return nil
}

// proc returns the process pid as Finish's hooks need it.
func (r *Restorer) proc(pid int) Proc { return r.procs[pid] }

// writeThrough writes b into fd of process pid, which cryo reopens through
// /proc: unread pipe data, refilled by cryo without injecting a write.
func writeThrough(pid int, fd uint64, flags int, b []byte) error {
	w, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/fd/"+strconv.FormatUint(fd, 10), flags, 0)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// corrupt is the error for an entry of files.img that makes no sense.
func corrupt(format string, args ...any) error {
	return &image.FormatError{File: imageset.Files.Name, Offset: -1, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
}

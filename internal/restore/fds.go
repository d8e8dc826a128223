package restore

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// fdOpener opens one file of files.img in the child and returns the fd it
// got; restoreFiles then moves it to its number. One function per fd type,
// matching the dump's modules.
type fdOpener func(r *restorer, f *fdinfo.FileEntry) (uint64, error)

var fdOpeners = map[fdinfo.FdTypes]fdOpener{
	fdinfo.FdTypes_REG:       func(r *restorer, f *fdinfo.FileEntry) (uint64, error) { return r.openFile(f, f.GetReg().GetFlags()) },
	fdinfo.FdTypes_TTY:       openTTY,
	fdinfo.FdTypes_MEMFD:     openMemfd,
	fdinfo.FdTypes_PIPE:      openPipe,
	fdinfo.FdTypes_FIFO:      openFifo,
	fdinfo.FdTypes_EVENTFD:   openEventfd,
	fdinfo.FdTypes_EVENTPOLL: openEpoll,
	fdinfo.FdTypes_UNIXSK:    openUnix,
	fdinfo.FdTypes_SIGNALFD:  openSignalfd,
	fdinfo.FdTypes_TIMERFD:   openTimerfd,
	fdinfo.FdTypes_INOTIFY:   openInotify,
	fdinfo.FdTypes_PIDFD:     openPidfd,
}

// park moves an fd that restore keeps for a while above every fd number of
// the image, so that putting an image fd at its number never closes it.
func (r *restorer) park(fd uint64) (uint64, error) {
	nfd, err := r.c.call(r.c.leader, "fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, r.tempFdBase)
	if err != nil {
		return 0, err
	}
	r.c.call(r.c.leader, "close", unix.SYS_CLOSE, fd)
	return nfd, nil
}

// efdSemaphore mirrors the dump's marker for EFD_SEMAPHORE in the flags.
const efdSemaphore = 1

func openTTY(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	if !r.opts.ShellJob {
		return 0, fmt.Errorf("a terminal (%s): restore with --shell-job to attach it to this terminal: %w", f.GetReg().GetName(), ErrNotSupported)
	}
	tty, err := ttyPath()
	if err != nil {
		return 0, err
	}
	p, err := r.c.str(tty)
	if err != nil {
		return 0, err
	}
	return r.c.call(r.c.leader, "open "+tty, unix.SYS_OPENAT, unixAtFdcwd, p, uint64(f.GetReg().GetFlags()|unix.O_CLOEXEC|unix.O_NOCTTY), 0)
}

// memfdFd returns an fd of the process on memfd inode id, creating the memfd
// (name, size, contents) if no process of the tree has made it yet, or
// taking the owner's with pidfd_getfd. Seals come last (closeShared), as
// they may forbid the writes that put the contents back.
func (r *restorer) memfdFd(id uint32) (uint64, error) {
	if fd, ok := r.memfdFds[id]; ok {
		return fd, nil
	}
	c := r.c
	var fd uint64
	if o, ok := r.t.memfds[id]; ok {
		got, err := r.takeFd(o)
		if err != nil {
			return 0, fmt.Errorf("memfd inode %d: %w", id, err)
		}
		fd = got
	} else {
		var ino *memfd.MemfdInodeEntry
		for _, m := range r.l.memfds {
			if uint32(m.GetInodeId()) == id {
				ino = m
			}
		}
		if ino == nil {
			return 0, &image.FormatError{File: "memfd-inode.img", Offset: -1, Err: fmt.Errorf("no memfd inode %d: %w", id, image.ErrImageCorrupt)}
		}
		p, err := c.str(ino.GetName())
		if err != nil {
			return 0, err
		}
		if fd, err = c.call(c.leader, "memfd_create "+ino.GetName(), unix.SYS_MEMFD_CREATE, p, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err != nil {
			return 0, err
		}
		if _, err := c.call(c.leader, "ftruncate memfd", unix.SYS_FTRUNCATE, fd, ino.GetSize()); err != nil {
			return 0, err
		}
		if err := r.fillShmem(fd, ino.GetShmid()); err != nil {
			return 0, fmt.Errorf("memfd %s: %w", ino.GetName(), err)
		}
	}
	fd, err := r.park(fd)
	if err != nil {
		return 0, err
	}
	if _, ok := r.t.memfds[id]; !ok {
		r.t.memfds[id] = fdOwner{pid: c.pid, fd: fd}
	}
	if r.memfdFds == nil {
		r.memfdFds = map[uint32]uint64{}
	}
	r.memfdFds[id] = fd
	return fd, nil
}

// takeFd gets, in this process, the open file description that another
// process of the tree holds at owner.fd: pidfd_open + pidfd_getfd run by
// the receiving process itself. The new fd is close-on-exec.
func (r *restorer) takeFd(owner fdOwner) (uint64, error) {
	c := r.c
	if r.pidfds == nil {
		r.pidfds = map[int]uint64{}
	}
	pfd, ok := r.pidfds[owner.pid]
	if !ok {
		var err error
		if pfd, err = c.call(c.leader, "pidfd_open", unix.SYS_PIDFD_OPEN, uint64(owner.pid), 0); err != nil {
			return 0, err
		}
		if pfd, err = r.park(pfd); err != nil {
			return 0, err
		}
		r.pidfds[owner.pid] = pfd
	}
	return c.call(c.leader, fmt.Sprintf("pidfd_getfd %d of %d", owner.fd, owner.pid), unix.SYS_PIDFD_GETFD, pfd, owner.fd, 0)
}

// fillShmem writes the contents of a shared object (pagemap-shmem-ID.img)
// through the child's fd on it, reopened by cryo via /proc.
func (r *restorer) fillShmem(fd uint64, shmid uint32) error {
	pm := imageset.PagemapShmem(shmid)
	name := pm.Name
	pagesID, entries, err := imageset.ReadPagemap(r.l.dir, pm)
	if err != nil {
		return err
	}
	pr, err := r.l.dir.OpenPages(pagesID)
	if err != nil {
		return err
	}
	defer pr.Close()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", r.c.pid, fd), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, e := range entries {
		off, n := int64(e.GetVaddr()), int64(e.GetNrPages())*pageSize
		if off < 0 || n < 0 || off+n < off {
			return &image.FormatError{File: name, Offset: -1, Err: fmt.Errorf("range %#x+%d: %w", off, n, image.ErrImageCorrupt)}
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := io.ReadFull(pr, buf[:k]); err != nil {
				return err
			}
			if _, err := f.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off += k
			n -= k
		}
	}
	return nil
}

// closeShared runs once every process has its files: the memfd owners
// seal their memfds, and every fd restore held for sharing (memfd inodes,
// pipe ends no fd of the image holds, pidfds) is closed.
func (t *treeRestorer) closeShared() error {
	for _, r := range t.rs {
		if r.l.zombie {
			continue
		}
		for _, ino := range r.l.memfds {
			o, ok := t.memfds[uint32(ino.GetInodeId())]
			if s := ino.GetSeals(); s != 0 && ok && o.pid == r.c.pid {
				if _, err := r.c.call(r.c.leader, "fcntl(F_ADD_SEALS)", unix.SYS_FCNTL, o.fd, unix.F_ADD_SEALS, uint64(s)); err != nil {
					return fmt.Errorf("memfd %s: seals %#x: %w", ino.GetName(), s, err)
				}
			}
		}
	}
	for _, r := range t.rs {
		if r.l.zombie {
			continue
		}
		var fds []uint64
		for _, fd := range r.memfdFds {
			fds = append(fds, fd)
		}
		for _, fd := range r.pidfds {
			fds = append(fds, fd)
		}
		for _, h := range r.t.fifos {
			if h.pid == r.c.pid {
				fds = append(fds, h.fd)
			}
		}
		for _, e := range r.t.pipes {
			for i := range e.fds {
				if e.pid == r.c.pid && !e.used[i] {
					fds = append(fds, e.fds[i])
				}
			}
		}
		for _, fd := range fds {
			if _, err := r.c.call(r.c.leader, "close", unix.SYS_CLOSE, fd); err != nil {
				return err
			}
		}
	}
	return nil
}

// openMemfd opens a new description of a re-created memfd: reopening it
// through /proc/self/fd gives its own flags and offset, as the original had.
func openMemfd(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	m := f.GetMemfd()
	ifd, err := r.memfdFd(m.GetInodeId())
	if err != nil {
		return 0, err
	}
	p, err := r.c.str(fmt.Sprintf("/proc/self/fd/%d", ifd))
	if err != nil {
		return 0, err
	}
	fd, err := r.c.call(r.c.leader, "reopen memfd", unix.SYS_OPENAT, unixAtFdcwd, p, uint64(m.GetFlags()&^unix.O_CREAT|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, err
	}
	if pos := m.GetPos(); pos != 0 {
		if _, err := r.c.call(r.c.leader, "lseek", unix.SYS_LSEEK, fd, pos, unix.SEEK_SET); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// openPipe creates each pipe once, with its capacity and unread data, and
// hands out its ends; ends no fd of the image holds are closed at the end.
func openPipe(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	pe := f.GetPipe()
	ends, ok := r.t.pipes[pe.GetPipeId()]
	if !ok {
		arr, err := c.arg(make([]byte, 8))
		if err != nil {
			return 0, err
		}
		if _, err := c.leader.Call("pipe2", unix.SYS_PIPE2, arr, unix.O_CLOEXEC); err != nil {
			c.cursor = 0
			return 0, err
		}
		b, err := c.out(arr, 8)
		c.cursor = 0
		if err != nil {
			return 0, err
		}
		ends = &pipeEnds{pid: c.pid}
		for i := range ends.fds {
			if ends.fds[i], err = r.park(uint64(binary.LittleEndian.Uint32(b[i*4:]))); err != nil {
				return 0, err
			}
		}
		r.t.pipes[pe.GetPipeId()] = ends
		d := r.l.pipeData[pe.GetPipeId()]
		if d.capacity != 0 {
			if _, err := c.call(c.leader, "fcntl(F_SETPIPE_SZ)", unix.SYS_FCNTL, ends.fds[1], unix.F_SETPIPE_SZ, uint64(d.capacity)); err != nil {
				return 0, err
			}
		}
		if len(d.data) > 0 {
			w, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", c.pid, ends.fds[1]), os.O_WRONLY, 0)
			if err != nil {
				return 0, err
			}
			_, err = w.Write(d.data)
			w.Close()
			if err != nil {
				return 0, fmt.Errorf("refill pipe:[%d]: %w", pe.GetPipeId(), err)
			}
		}
	}
	end := 0
	if pe.GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
		end = 1
	}
	var fd uint64
	switch {
	case ends.pid != c.pid:
		// Another process made the pipe; each open file description of
		// it is one file id, so this is a description of its own: take the
		// pipe's end and give it this description's flags.
		var err error
		if fd, err = r.takeFd(fdOwner{pid: ends.pid, fd: ends.fds[end]}); err != nil {
			return 0, err
		}
	case ends.used[end]:
		// A second open file description of the same end.
		p, err := c.str(fmt.Sprintf("/proc/self/fd/%d", ends.fds[end]))
		if err != nil {
			return 0, err
		}
		return c.call(c.leader, "reopen pipe", unix.SYS_OPENAT, unixAtFdcwd, p, uint64(pe.GetFlags()|unix.O_CLOEXEC), 0)
	default:
		ends.used[end] = true
		fd = ends.fds[end]
	}
	if fl := pe.GetFlags() & (unix.O_NONBLOCK | unix.O_DIRECT); fl != 0 {
		if _, err := c.call(c.leader, "fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(fl)); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

type pipeEnds struct {
	pid  int // the process that made the pipe and holds both ends
	fds  [2]uint64
	used [2]bool
}

func openEventfd(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	e := f.GetEfd()
	flags := uint64(unix.EFD_CLOEXEC)
	if e.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.EFD_NONBLOCK
	}
	if e.GetFlags()&efdSemaphore != 0 {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := c.call(c.leader, "eventfd2", unix.SYS_EVENTFD2, 0, flags)
	if err != nil {
		return 0, err
	}
	if n := e.GetCounter(); n != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		p, err := c.arg(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := c.call(c.leader, "write eventfd", unix.SYS_WRITE, fd, p, 8); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// openEpoll creates the set; its watches are added by fillEpolls once every
// fd they name exists.
func openEpoll(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	return r.c.call(r.c.leader, "epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
}

// fillEpolls adds each epoll set's watches, in the order fdinfo listed them.
func (r *restorer) fillEpolls(epolls map[uint64]*fdinfo.FileEntry) error {
	c := r.c
	for epfd, f := range epolls {
		for _, t := range f.GetEpfd().GetTfd() {
			ev := make([]byte, 12) // struct epoll_event is packed on x86_64
			binary.LittleEndian.PutUint32(ev, t.GetEvents())
			binary.LittleEndian.PutUint64(ev[4:], t.GetData())
			p, err := c.arg(ev)
			if err != nil {
				return err
			}
			if _, err := c.call(c.leader, "epoll_ctl", unix.SYS_EPOLL_CTL, epfd, unix.EPOLL_CTL_ADD, uint64(t.GetTfd()), p); err != nil {
				return fmt.Errorf("epoll fd %d: watch fd %d: %w", epfd, t.GetTfd(), err)
			}
		}
	}
	return nil
}

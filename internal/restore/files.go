package restore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/image"
)

// ghosts are the unlinked files of the image, put back on disk for the time
// it takes the process to open them, then unlinked again.
type ghosts struct {
	paths   map[uint32]string // file id → where its contents are now
	created []string
}

// prepareGhosts writes each ghost file's saved contents to a file. The
// original path is used when it is free, so /proc/PID/fd and maps show the
// same "PATH (deleted)" as before the dump; otherwise a unique name beside it.
func prepareGhosts(l *loaded) (*ghosts, error) {
	g := &ghosts{paths: map[uint32]string{}}
	for id, f := range l.files {
		if !l.dir.Has(image.GhostName(id)) {
			continue
		}
		name := f.GetReg().GetName()
		path := name
		file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			var b [6]byte
			rand.Read(b[:])
			path = filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".cryo-ghost-"+hex.EncodeToString(b[:]))
			if file, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				g.cleanup()
				return nil, fmt.Errorf("re-create deleted file %s: %w", name, err)
			}
		}
		g.created = append(g.created, path)
		e, err := l.dir.ReadGhostFile(id, file)
		if err == nil {
			err = file.Chmod(os.FileMode(e.GetMode() & 0o7777))
		}
		if err == nil {
			err = os.Chown(path, int(e.GetUid()), int(e.GetGid()))
			if errors.Is(err, os.ErrPermission) {
				err = nil // not root: the file stays the restorer's
			}
		}
		file.Close()
		if err != nil {
			g.cleanup()
			return nil, fmt.Errorf("re-create deleted file %s: %w", name, err)
		}
		g.paths[id] = path
	}
	return g, nil
}

func (g *ghosts) cleanup() {
	if g == nil {
		return
	}
	for _, p := range g.created {
		os.Remove(p)
	}
	g.created = nil
}

// openFile opens a file of files.img in the child and returns the fd.
func (r *restorer) openFile(f *fdinfo.FileEntry, flags uint32) (uint64, error) {
	name := f.GetReg().GetName()
	if p, ok := r.ghosts.paths[f.GetId()]; ok {
		name = p
	}
	p, err := r.c.str(name)
	if err != nil {
		return 0, err
	}
	// The dumped flags include how the file was created; opening must not
	// create or truncate anything.
	flags &^= unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | oTmpfileOnly
	fd, err := r.c.call(r.c.leader, "open "+name, unix.SYS_OPENAT, unixAtFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, err // the call names the file and the process
	}
	return fd, nil
}

// placeFd moves fd to number want (dup3 then close), with FD_CLOEXEC as asked.
func (r *restorer) placeFd(fd, want uint64, cloexec bool) error {
	c := r.c
	fl := uint64(0)
	if cloexec {
		fl = unix.O_CLOEXEC
	}
	if fd == want {
		if !cloexec {
			_, err := c.call(c.leader, "fcntl(F_SETFD)", unix.SYS_FCNTL, want, unix.F_SETFD, 0)
			return err
		}
		return nil
	}
	if _, err := c.call(c.leader, "dup3", unix.SYS_DUP3, fd, want, fl); err != nil {
		return fmt.Errorf("fd %d: %w", want, err)
	}
	_, err := c.call(c.leader, "close", unix.SYS_CLOSE, fd)
	return err
}

// ttyPath is the terminal of cryo itself, for --shell-job.
func ttyPath() (string, error) {
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		}
	}
	return "", errors.New("--shell-job: cryo restore has no terminal on stdin, stdout or stderr")
}

// restoreFiles rebuilds the fd table: every fd of the image at its number,
// with its flags and offset, and fds that shared an open file description
// sharing one again.
func (r *restorer) restoreFiles() error {
	c := r.c
	fds := append([]*fdinfo.FdinfoEntry(nil), r.l.fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
	first := map[uint32]uint64{} // file id → the fd that holds it
	epolls := map[uint64]*fdinfo.FileEntry{}
	for _, e := range fds {
		want := uint64(e.GetFd())
		f := r.l.files[e.GetId()]
		cloexec := e.GetFlags()&unix.FD_CLOEXEC != 0
		if o, ok := r.t.files[e.GetId()]; ok && o.pid != c.pid {
			// An open file description another process of the tree holds
			// (inherited, or passed): the very same one, not a new open.
			fd, err := r.takeFd(o)
			if err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
			if err := r.placeFd(fd, want, cloexec); err != nil {
				return err
			}
			first[e.GetId()] = want
			continue
		}
		if src, ok := first[e.GetId()]; ok {
			fl := uint64(0)
			if cloexec {
				fl = unix.O_CLOEXEC
			}
			if _, err := c.call(c.leader, "dup3", unix.SYS_DUP3, src, want, fl); err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
			continue
		}
		open := fdOpeners[f.GetType()]
		if open == nil {
			return fmt.Errorf("fd %d of type %v: %w", want, f.GetType(), ErrNotSupported)
		}
		fd, err := open(r, f)
		if err != nil {
			return fmt.Errorf("fd %d: %w", want, err)
		}
		if fd != want {
			fl := uint64(0)
			if cloexec {
				fl = unix.O_CLOEXEC
			}
			if _, err := c.call(c.leader, "dup3", unix.SYS_DUP3, fd, want, fl); err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
			c.call(c.leader, "close", unix.SYS_CLOSE, fd)
		} else if !cloexec {
			if _, err := c.call(c.leader, "fcntl(F_SETFD)", unix.SYS_FCNTL, want, unix.F_SETFD, 0); err != nil {
				return fmt.Errorf("fd %d: %w", want, err)
			}
		}
		if f.GetType() == fdinfo.FdTypes_REG && f.GetReg().GetPos() != 0 {
			if _, err := c.call(c.leader, "lseek", unix.SYS_LSEEK, want, f.GetReg().GetPos(), unix.SEEK_SET); err != nil {
				return fmt.Errorf("fd %d (%s): seek to %d: %w", want, f.GetReg().GetName(), f.GetReg().GetPos(), err)
			}
		}
		first[e.GetId()] = want
		r.t.files[e.GetId()] = fdOwner{pid: c.pid, fd: want}
		if f.GetType() == fdinfo.FdTypes_EVENTPOLL {
			epolls[want] = f
		}
	}
	if err := r.fillEpolls(epolls); err != nil {
		return err
	}
	// Where it works: root first (chroot), then cwd, then umask.
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

// oTmpfileOnly is __O_TMPFILE alone: unix.O_TMPFILE includes O_DIRECTORY,
// which a directory fd must keep.
const oTmpfileOnly = 0o20000000

package restore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/image"
)

// openFifo reopens a FIFO by its path. The first process of the tree to
// need a FIFO opens it read-write as well ("holder"): with a reader and a
// writer present no open of it blocks, and its unread data can be written
// back before anyone reads. Holders are closed with the other shared fds,
// once every process has its files.
func openFifo(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	ff := f.GetFifo()
	reg := r.l.files[ff.GetRegfId()]
	if reg.GetReg() == nil {
		return 0, &image.FormatError{File: "files.img", Offset: -1, Err: fmt.Errorf("fifo %d names file %d, not a regular-file entry: %w", f.GetId(), ff.GetRegfId(), image.ErrImageCorrupt)}
	}
	path := reg.GetReg().GetName()
	if _, ok := r.t.fifos[ff.GetPipeId()]; !ok {
		p, err := c.str(path)
		if err != nil {
			return 0, err
		}
		hfd, err := c.call(c.leader, "open fifo "+path, unix.SYS_OPENAT, unixAtFdcwd, p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("reopen fifo %s: %w", path, err)
		}
		if hfd, err = r.park(hfd); err != nil {
			return 0, err
		}
		r.t.fifos[ff.GetPipeId()] = fdOwner{pid: c.pid, fd: hfd}
		if d := r.l.fifoData[ff.GetPipeId()]; len(d.data) > 0 || d.capacity != 0 {
			if d.capacity != 0 {
				if _, err := c.call(c.leader, "fcntl(F_SETPIPE_SZ)", unix.SYS_FCNTL, hfd, unix.F_SETPIPE_SZ, uint64(d.capacity)); err != nil {
					return 0, err
				}
			}
			w, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", c.pid, hfd), os.O_WRONLY|unix.O_NONBLOCK, 0)
			if err != nil {
				return 0, err
			}
			_, err = w.Write(d.data)
			w.Close()
			if err != nil {
				return 0, fmt.Errorf("refill fifo %s: %w", path, err)
			}
		}
	}
	flags := reg.GetReg().GetFlags()
	p, err := c.str(path)
	if err != nil {
		return 0, err
	}
	fd, err := c.call(c.leader, "open fifo "+path, unix.SYS_OPENAT, unixAtFdcwd, p, uint64(flags|unix.O_NONBLOCK|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, fmt.Errorf("reopen fifo %s: %w", path, err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		if _, err := c.call(c.leader, "fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&^unix.O_ACCMODE)); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

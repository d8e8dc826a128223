package files

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"

	"github.com/cryo-project/cryo/internal/imageset"
)

// FIFOs (named pipes): a pipe reached by a path. The open file
// description is a FIFO entry naming the pipe (its unread data is peeked
// as a pipe's, into fifo-data.img) and a REG entry for its path and flags,
// as CRIU writes it. Restore reopens the path; the first process of the
// tree to need a FIFO opens it read-write as well ("holder"): with a
// reader and a writer present no open of it blocks, and its unread data
// can be written back before anyone reads. Holders are closed once every
// process has its files.
var fifoKind = Kind{
	Name:    "fifo",
	Type:    fdinfo.FdTypes_FIFO,
	Dump:    func() dumper { return fifoDump{} },
	Restore: func() opener { return &fifoOpen{holders: map[uint32]Owner{}} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("fifo:[%d]", f.GetFifo().GetPipeId())}
	},
}

type fifoDump struct{}

func (fifoDump) match(fd *Fd) bool {
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFIFO && strings.HasPrefix(fd.Link, "/")
}

func (fifoDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	if err := checkReachable(fd.Link, fd.Stat); err != nil {
		return 0, err
	}
	if _, err := dumpHalf[*pipeDump](d).pipe(fd, true); err != nil {
		return 0, err
	}
	regID := d.Add(regEntry(strings.TrimSuffix(fd.Link, " (deleted)"), fd.Flags, 0, fd.Stat))
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_FIFO.Enum(),
		Fifo: &fifo.FifoEntry{PipeId: proto.Uint32(uint32(fd.Stat.Ino)), RegfId: proto.Uint32(regID)},
	}), nil
}

type fifoOpen struct {
	data    map[uint32]pipeData
	holders map[uint32]Owner // pipe id → the read-write holder
}

func (fo *fifoOpen) loadSide(r *Restorer) (err error) {
	fo.data, err = loadPipeData(r.set.Dir, imageset.FifoData)
	return err
}

func (fo *fifoOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	ff := f.GetFifo()
	reg := r.set.Files[ff.GetRegfId()]
	if reg.GetReg() == nil {
		return 0, corrupt("fifo %d names file %d, not a regular-file entry", f.GetId(), ff.GetRegfId())
	}
	path := reg.GetReg().GetName()
	if _, ok := fo.holders[ff.GetPipeId()]; !ok {
		if err := fo.hold(r, p, ff.GetPipeId(), path); err != nil {
			return 0, err
		}
	}
	flags := reg.GetReg().GetFlags()
	s, err := p.Str(path)
	if err != nil {
		return 0, err
	}
	fd, err := p.Call("open fifo "+path, unix.SYS_OPENAT, atFdcwd, s, uint64(flags|unix.O_NONBLOCK|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, fmt.Errorf("reopen fifo %s: %w", path, err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		if _, err := p.Call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&^unix.O_ACCMODE)); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// hold opens the FIFO read-write in p, parks it, and refills it.
func (fo *fifoOpen) hold(r *Restorer, p Proc, id uint32, path string) error {
	s, err := p.Str(path)
	if err != nil {
		return err
	}
	hfd, err := p.Call("open fifo "+path, unix.SYS_OPENAT, atFdcwd, s, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reopen fifo %s: %w", path, err)
	}
	if hfd, err = r.Park(p, hfd); err != nil {
		return err
	}
	fo.holders[id] = Owner{Pid: p.Pid(), Fd: hfd}
	d := fo.data[id]
	if d.capacity != 0 {
		if _, err := p.Call("fcntl(F_SETPIPE_SZ)", unix.SYS_FCNTL, hfd, unix.F_SETPIPE_SZ, uint64(d.capacity)); err != nil {
			return err
		}
	}
	if len(d.data) > 0 {
		if err := writeThrough(p.Pid(), hfd, os.O_WRONLY|unix.O_NONBLOCK, d.data); err != nil {
			return fmt.Errorf("refill fifo %s: %w", path, err)
		}
	}
	return nil
}

func (fo *fifoOpen) treeDone(r *Restorer) error {
	for _, h := range fo.holders {
		if p := r.proc(h.Pid); p != nil {
			if _, err := p.Call("close fifo holder", unix.SYS_CLOSE, h.Fd); err != nil {
				return err
			}
		}
	}
	return nil
}

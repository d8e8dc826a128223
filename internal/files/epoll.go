package files

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/cryo-project/cryo/internal/errs"
)

// epoll sets: each watched fd (by number, as fdinfo names it) with its
// events and data. The kernel recomputes readiness. Restore creates the
// set with the other fds and adds its watches once every fd of the process
// is in place, since a watch names an fd number.
var epollKind = Kind{
	Name:    "epoll",
	Type:    fdinfo.FdTypes_EVENTPOLL,
	Dump:    func() dumper { return epollDump{} },
	Restore: func() opener { return epollOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("anon_inode:[eventpoll] %d watches", len(f.GetEpfd().GetTfd()))}
	},
}

type epollDump struct{}

func (epollDump) match(fd *Fd) bool { return fd.Link == "anon_inode:[eventpoll]" }

func (epollDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	ep := &eventpoll.EventpollFileEntry{Flags: proto.Uint32(fd.Flags), Fown: noOwner()}
	for _, t := range fd.Info.Epoll {
		// Restore adds a watch by fd number: that fd must still be the
		// watched file. A watch outlives the closing of its fd while
		// another fd (a dup, a child's) keeps the file open.
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", fd.Pid, t.TFD), &st); err != nil || st.Ino != t.Ino {
			return 0, fmt.Errorf("it watches fd %d (inode %d), which was closed since or is another file now: %w", t.TFD, t.Ino, errs.ErrNotSupported)
		}
		ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
			Id: proto.Uint32(0), Tfd: proto.Uint32(uint32(t.TFD)), Events: proto.Uint32(t.Events),
			Data: proto.Uint64(t.Data), Inode: proto.Uint64(t.Ino), Pos: proto.Uint64(uint64(t.Pos)),
		})
	}
	return d.Add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_EVENTPOLL.Enum(), Epfd: ep}), nil
}

type epollOpen struct{}

func (epollOpen) open(_ *Restorer, p Proc, _ *fdinfo.FileEntry) (uint64, error) {
	return p.Call("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
}

// processDone adds each set's watches, in the order fdinfo listed them.
func (epollOpen) processDone(_ *Restorer, p Proc, sets map[uint64]*fdinfo.FileEntry) error {
	for epfd, f := range sets {
		for _, t := range f.GetEpfd().GetTfd() {
			ev := make([]byte, 12) // struct epoll_event is packed on x86_64
			binary.LittleEndian.PutUint32(ev, t.GetEvents())
			binary.LittleEndian.PutUint64(ev[4:], t.GetData())
			a, err := p.Arg(ev)
			if err != nil {
				return err
			}
			if _, err := p.Call("epoll_ctl", unix.SYS_EPOLL_CTL, epfd, unix.EPOLL_CTL_ADD, uint64(t.GetTfd()), a); err != nil {
				return fmt.Errorf("epoll fd %d: watch fd %d: %w", epfd, t.GetTfd(), err)
			}
		}
	}
	return nil
}

package dump

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
)

// EfdSemaphore marks an eventfd in EFD_SEMAPHORE mode in the entry's flags.
// eventfd files are always O_RDWR, so bit 0 (O_WRONLY) is free for it.
const EfdSemaphore = 1

func noOwner() *fown.FownEntry {
	z := proto.Uint32(0)
	return &fown.FownEntry{Uid: z, Euid: z, Signum: z, PidType: z, Pid: z}
}

func dumpEventfd(e *fdEnv) (uint32, error) {
	ev := e.info.Eventfd
	if ev == nil {
		return 0, fmt.Errorf("fdinfo has no eventfd-count")
	}
	flags := e.flags
	if ev.Semaphore {
		flags |= EfdSemaphore
	}
	return e.p.files.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_EVENTFD.Enum(),
		Efd:  &eventfd.EventfdFileEntry{Flags: proto.Uint32(flags), Fown: noOwner(), Counter: proto.Uint64(ev.Count)},
	}), nil
}

// dumpEpoll records an epoll set: each watched fd (by number, as fdinfo
// names it) with its events and data. The kernel recomputes readiness.
func dumpEpoll(e *fdEnv) (uint32, error) {
	ep := &eventpoll.EventpollFileEntry{Flags: proto.Uint32(e.flags), Fown: noOwner()}
	for _, t := range e.info.Epoll {
		ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
			Id: proto.Uint32(0), Tfd: proto.Uint32(uint32(t.TFD)), Events: proto.Uint32(t.Events),
			Data: proto.Uint64(t.Data), Inode: proto.Uint64(t.Ino), Pos: proto.Uint64(uint64(t.Pos)),
		})
	}
	return e.p.files.add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_EVENTPOLL.Enum(), Epfd: ep}), nil
}

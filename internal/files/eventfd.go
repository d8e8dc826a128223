package files

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
)

// eventfd: its counter and flags. Restore makes a new one with the same
// flags and writes the counter into it.
var eventfdKind = Kind{
	Name:    "eventfd",
	Type:    fdinfo.FdTypes_EVENTFD,
	Dump:    func() dumper { return eventfdDump{} },
	Restore: func() opener { return eventfdOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("anon_inode:[eventfd] count %d", f.GetEfd().GetCounter())}
	},
}

// efdSemaphore marks an eventfd in EFD_SEMAPHORE mode in the entry's
// flags: eventfd files are always O_RDWR, so bit 0 (O_WRONLY) is free for
// it. CRIU's image has no field for the mode.
const efdSemaphore = 1

type eventfdDump struct{}

func (eventfdDump) match(fd *Fd) bool { return fd.Link == "anon_inode:[eventfd]" }

func (eventfdDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	ev := fd.Info.Eventfd
	if ev == nil {
		return 0, fmt.Errorf("fdinfo has no eventfd-count")
	}
	flags := fd.Flags
	if ev.Semaphore {
		flags |= efdSemaphore
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_EVENTFD.Enum(),
		Efd:  &eventfd.EventfdFileEntry{Flags: proto.Uint32(flags), Fown: noOwner(), Counter: proto.Uint64(ev.Count)},
	}), nil
}

type eventfdOpen struct{}

func (eventfdOpen) open(_ *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetEfd()
	flags := uint64(unix.EFD_CLOEXEC)
	if e.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.EFD_NONBLOCK
	}
	if e.GetFlags()&efdSemaphore != 0 {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := p.Call("eventfd2", unix.SYS_EVENTFD2, 0, flags)
	if err != nil {
		return 0, err
	}
	if n := e.GetCounter(); n != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		a, err := p.Arg(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := p.Call("write eventfd", unix.SYS_WRITE, fd, a, 8); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

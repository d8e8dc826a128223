package files

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
)

// signalfd: its mask. The signals it would read are the pending signals
// of the thread that reads, dumped and restored with the tasks.
var signalfdKind = Kind{
	Name:    "signalfd",
	Type:    fdinfo.FdTypes_SIGNALFD,
	Dump:    func() dumper { return signalfdDump{} },
	Restore: func() opener { return signalfdOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("anon_inode:[signalfd] mask %#x", f.GetSgfd().GetSigmask())}
	},
}

type signalfdDump struct{}

func (signalfdDump) match(fd *Fd) bool { return fd.Link == "anon_inode:[signalfd]" }

func (signalfdDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	s := fd.Info.Signalfd
	if s == nil {
		return 0, fmt.Errorf("fdinfo has no sigmask line")
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_SIGNALFD.Enum(),
		Sgfd: &signalfd.SignalfdEntry{Flags: proto.Uint32(fd.Flags), Fown: noOwner(), Sigmask: proto.Uint64(s.Sigmask)},
	}), nil
}

type signalfdOpen struct{}

func (signalfdOpen) open(_ *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	s := f.GetSgfd()
	var mask [8]byte
	binary.LittleEndian.PutUint64(mask[:], s.GetSigmask())
	a, err := p.Arg(mask[:])
	if err != nil {
		return 0, err
	}
	flags := uint64(unix.SFD_CLOEXEC)
	if s.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	return p.Call("signalfd4", unix.SYS_SIGNALFD4, ^uint64(0), a, 8, flags)
}

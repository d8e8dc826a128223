package dump

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
)

// dumpSignalfd records a signalfd's mask. The signals it would read are the
// pending signals of the thread that reads, dumped with the tasks.
func dumpSignalfd(e *fdEnv) (uint32, error) {
	s := e.info.Signalfd
	if s == nil {
		return 0, fmt.Errorf("fdinfo has no sigmask line")
	}
	return e.p.files.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_SIGNALFD.Enum(),
		Sgfd: &signalfd.SignalfdEntry{Flags: proto.Uint32(e.flags), Fown: noOwner(), Sigmask: proto.Uint64(s.Sigmask)},
	}), nil
}

package dump

import (
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
)

// A FIFO (named pipe) is a pipe reached by a path: its open file
// description is a FIFO entry naming the pipe (for its unread data, peeked
// as a pipe's) and a regular-file entry for its path and flags, as CRIU
// writes it.
func isFifo(link string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFIFO && strings.HasPrefix(link, "/")
}

func dumpFifo(e *fdEnv) (uint32, error) {
	ft := e.p.files
	if _, ok := ft.pipes[e.st.Ino]; !ok {
		ps, err := peekPipe(e.path, e.st.Ino)
		if err != nil {
			return 0, err
		}
		ps.fifo = true
		ft.pipes[e.st.Ino] = ps
		ft.pipeOrder = append(ft.pipeOrder, ps)
	}
	regID := ft.add(regEntry(strings.TrimSuffix(e.link, " (deleted)"), e.flags, 0, e.st))
	return ft.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_FIFO.Enum(),
		Fifo: &fifo.FifoEntry{PipeId: proto.Uint32(uint32(e.st.Ino)), RegfId: proto.Uint32(regID)},
	}), nil
}

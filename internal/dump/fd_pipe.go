package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
)

// pipeState is one pipe (inode) of the process: its unread data and size.
type pipeState struct {
	ino      uint64
	data     []byte
	capacity int
	ends     [2]bool // read, write ends seen in the process
	// fifo marks a named pipe: anyone may open it again by its path, so
	// an end outside the tree is no reason to refuse it.
	fifo bool
}

func isPipe(link string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFIFO && strings.HasPrefix(link, "pipe:[")
}

func dumpPipe(e *fdEnv) (uint32, error) {
	ft := e.p.files
	ps, ok := ft.pipes[e.st.Ino]
	if !ok {
		var err error
		if ps, err = peekPipe(e.path, e.st.Ino); err != nil {
			return 0, err
		}
		ft.pipes[e.st.Ino] = ps
		ft.pipeOrder = append(ft.pipeOrder, ps)
	}
	if e.flags&unix.O_ACCMODE == unix.O_WRONLY {
		ps.ends[1] = true
	} else {
		ps.ends[0] = true
	}
	return ft.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIPE.Enum(),
		Pipe: &pipe.PipeEntry{
			PipeId: proto.Uint32(uint32(e.st.Ino)), Flags: proto.Uint32(e.flags), Fown: noOwner(),
		},
	}), nil
}

// peekPipe copies the unread bytes of a pipe without consuming them: tee(2)
// duplicates them into a pipe of cryo's own, which is then drained. The
// pipe is reached by reopening /proc/PID/fd/N, which gives a read end
// whichever end the process holds.
func peekPipe(path string, ino uint64) (*pipeState, error) {
	src, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open pipe: %w", err)
	}
	defer src.Close()
	size, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, fmt.Errorf("pipe size: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, fmt.Errorf("size a pipe to %d bytes to copy pipe:[%d]: %w", size, ino, err)
	}
	n, err := unix.Tee(int(src.Fd()), p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		n, err = 0, nil // empty
	}
	if err != nil {
		return nil, fmt.Errorf("copy data of pipe:[%d]: %w", ino, err)
	}
	data := make([]byte, n)
	for off := 0; off < int(n); {
		k, err := unix.Read(p[0], data[off:])
		if err != nil {
			return nil, fmt.Errorf("read data of pipe:[%d]: %w", ino, err)
		}
		off += k
	}
	return &pipeState{ino: ino, data: data, capacity: size}, nil
}

// checkPipes refuses pipes with an end outside the dumped tree: restoring
// one end alone would cut the processes off from their peer.
func (ft *fileTable) checkPipes(pid int) error {
	for _, ps := range ft.pipeOrder {
		if !ps.fifo && (!ps.ends[0] || !ps.ends[1]) {
			which := "read"
			if !ps.ends[1] {
				which = "write"
			}
			return fmt.Errorf("pipe:[%s] in the tree of pid %d has its %s end outside it: %w", strconv.FormatUint(ps.ino, 10), pid, which, ErrNotSupported)
		}
	}
	return nil
}

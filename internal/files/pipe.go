package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	pipedata "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// Pipes, with their unread data and capacity (pipes-data.img, as CRIU
// writes it). Each open file description of a pipe is one entry naming
// the pipe by inode. The data is copied without consuming it (peekPipe).
// Restore makes each pipe once, in the first process that holds an end of
// it, refills it, and hands out its ends; a pipe with an end outside the
// dumped tree is replaced by the one the restore is given (inherit.go).
var pipeKind = Kind{
	Name:    "pipe",
	Type:    fdinfo.FdTypes_PIPE,
	Dump:    func() dumper { return &pipeDump{pipes: map[uint64]*pipeState{}} },
	Restore: func() opener { return &pipeOpen{ends: map[uint32]*pipeEnds{}} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("pipe:[%d]", f.GetPipe().GetPipeId()), HasFlags: true, Flags: f.GetPipe().GetFlags()}
	},
}

// pipeState is one pipe (inode) of the tree: its unread data and size.
type pipeState struct {
	ino      uint64
	data     []byte
	capacity int
	ends     [2]bool // read, write ends seen in the tree
	// fifo marks a named pipe: anyone may open it again by its path, so
	// an end outside the tree is no reason to refuse it.
	fifo bool
	// pid and fd are where the tree holds the pipe first.
	pid, fd int
}

type pipeDump struct {
	pipes map[uint64]*pipeState
	order []*pipeState
}

func (*pipeDump) match(fd *Fd) bool {
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFIFO && strings.HasPrefix(fd.Link, "pipe:[")
}

func (pd *pipeDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	ps, err := pd.pipe(fd, false)
	if err != nil {
		return 0, err
	}
	if fd.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		ps.ends[1] = true
	} else {
		ps.ends[0] = true
	}
	if ps.pid == 0 {
		ps.pid, ps.fd = fd.Pid, fd.Num
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIPE.Enum(),
		Pipe: &pipe.PipeEntry{PipeId: proto.Uint32(uint32(fd.Stat.Ino)), Flags: proto.Uint32(fd.Flags), Fown: noOwner()},
	}), nil
}

// pipe returns the state of the pipe fd is on, peeking at its data the
// first time the pipe is seen.
func (pd *pipeDump) pipe(fd *Fd, fifo bool) (*pipeState, error) {
	if ps, ok := pd.pipes[fd.Stat.Ino]; ok {
		return ps, nil
	}
	ps, err := peekPipe(fd.Path, fd.Stat.Ino)
	if err != nil {
		return nil, err
	}
	ps.fifo = fifo
	pd.pipes[fd.Stat.Ino] = ps
	pd.order = append(pd.order, ps)
	return ps, nil
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
	if errors.Is(err, unix.EAGAIN) {
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

// check notes the pipes with an end outside the dumped tree (a shell's or
// supervisor's pipe on the program's stdio, or none: a writer that closed
// its end): the image holds them like any other; what the restore gives
// the tree for the outside end is inherit.go's.
func (pd *pipeDump) check(d *Dumper) error {
	for _, ps := range pd.outside() {
		d.log().Info("a pipe's other end is not in the tree", "pipe", ps.ino, "outside", otherEnd(b2i(ps.ends[1])))
	}
	return nil
}

func (pd *pipeDump) outside() []*pipeState {
	var out []*pipeState
	for _, ps := range pd.order {
		if !ps.fifo && ps.ends[0] != ps.ends[1] {
			out = append(out, ps)
		}
	}
	return out
}

// Outside is a file of the tree whose other side is outside it: a pipe of
// which the tree holds one end only, a UNIX socket connected to a peer
// outside it (kept, DumpOptions.KeepOutside). Pid holds it at fd Fd.
type Outside struct {
	Key     string // pipe:[ID] or socket:[INO], as --inherit-fd names it
	Pid, Fd int
	// Socket: a socket, which the restore cannot make again without its
	// peer; a pipe it can.
	Socket bool
}

// OutsideFiles lists the tree's files whose other side is outside it.
func (d *Dumper) OutsideFiles() []Outside {
	var out []Outside
	for _, ps := range dumpHalf[*pipeDump](d).outside() {
		out = append(out, Outside{Key: fmt.Sprintf("pipe:[%d]", ps.ino), Pid: ps.pid, Fd: ps.fd})
	}
	for _, s := range dumpHalf[*unixDump](d).outside() {
		out = append(out, Outside{Key: fmt.Sprintf("socket:[%d]", s.d.Inode), Pid: s.pid, Fd: s.fd, Socket: true})
	}
	return out
}

// writeSide writes the unread data of pipes (pipes-data.img) and FIFOs
// (fifo-data.img): an entry, then the bytes.
func (pd *pipeDump) writeSide(_ *Dumper, s *Side) error {
	for _, kind := range []struct {
		f    imageset.File
		fifo bool
	}{{imageset.PipesData, false}, {imageset.FifoData, true}} {
		var w *image.Writer
		for _, ps := range pd.order {
			if ps.fifo != kind.fifo {
				continue
			}
			if w == nil {
				var err error
				if w, err = s.Dir.Create(kind.f.Name, kind.f.Magic); err != nil {
					return err
				}
			}
			if err := w.Write(&pipedata.PipeDataEntry{
				PipeId: proto.Uint32(uint32(ps.ino)), Bytes: proto.Uint32(uint32(len(ps.data))), Size: proto.Uint32(uint32(ps.capacity)),
			}); err != nil {
				w.Close()
				return err
			}
			if err := w.WriteRaw(ps.data); err != nil {
				w.Close()
				return err
			}
		}
		if w != nil {
			if err := w.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

// pipeData is what a pipe held: its unread bytes and its capacity.
type pipeData struct {
	data     []byte
	capacity uint32
}

// maxPipeData bounds one pipe's data as read back (a pipe holds at most
// fs.pipe-max-size, 1 MiB by default).
const maxPipeData = 1 << 30

// loadPipeData reads pipes-data.img or fifo-data.img, by pipe id.
func loadPipeData(dir *image.Dir, f imageset.File) (map[uint32]pipeData, error) {
	out := map[uint32]pipeData{}
	if !dir.Has(f.Name) {
		return out, nil
	}
	r, err := dir.Open(f.Name, f.Magic)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for {
		e := &pipedata.PipeDataEntry{}
		off := r.Offset()
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		n := int64(e.GetBytes())
		if n > r.Remaining() || n > maxPipeData {
			return nil, &image.FormatError{File: f.Name, Offset: off, Err: fmt.Errorf("pipe data of %d bytes exceeds the file: %w", n, image.ErrImageCorrupt)}
		}
		sr, err := r.Raw(n)
		if err != nil {
			return nil, err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(sr, b); err != nil {
			return nil, &image.FormatError{File: f.Name, Offset: r.Offset(), Err: err}
		}
		out[e.GetPipeId()] = pipeData{data: b, capacity: e.GetSize()}
	}
}

type pipeOpen struct {
	data map[uint32]pipeData
	ends map[uint32]*pipeEnds
}

type pipeEnds struct {
	pid  int // the process that made the pipe and holds both ends
	fds  [2]uint64
	used [2]bool
}

func (po *pipeOpen) loadSide(r *Restorer) (err error) {
	po.data, err = loadPipeData(r.set.Dir, imageset.PipesData)
	return err
}

// open hands out an end of the pipe, making the pipe (with its capacity
// and unread data) if this is the first end any process needs.
func (po *pipeOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	if fd, ok, err := r.openInherited(p, InheritKey(f)); ok {
		return fd, err
	}
	pe := f.GetPipe()
	ends, ok := po.ends[pe.GetPipeId()]
	if !ok {
		var err error
		if ends, err = po.make(r, p, pe.GetPipeId()); err != nil {
			return 0, err
		}
	}
	end := 0
	if pe.GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
		end = 1
	}
	var fd uint64
	switch {
	case ends.pid != p.Pid():
		// Another process made the pipe; each open file description of
		// it is one file id, so this is a description of its own: take the
		// pipe's end and give it this description's flags.
		var err error
		if fd, err = r.Take(p, Owner{Pid: ends.pid, Fd: ends.fds[end]}); err != nil {
			return 0, err
		}
	case ends.used[end]:
		// A second open file description of the same end.
		s, err := p.Str(fmt.Sprintf("/proc/self/fd/%d", ends.fds[end]))
		if err != nil {
			return 0, err
		}
		return p.Call("reopen pipe", unix.SYS_OPENAT, atFdcwd, s, uint64(pe.GetFlags()|unix.O_CLOEXEC), 0)
	default:
		// A copy: the fd handed out goes where the image has it, and
		// the parked one stays for the next description of this end
		// (reopened through /proc/self/fd) and for other processes.
		ends.used[end] = true
		var err error
		if fd, err = p.Call("dup pipe end", unix.SYS_FCNTL, ends.fds[end], unix.F_DUPFD_CLOEXEC, 0); err != nil {
			return 0, err
		}
	}
	if fl := pe.GetFlags() & (unix.O_NONBLOCK | unix.O_DIRECT); fl != 0 {
		if _, err := p.Call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(fl)); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

func (po *pipeOpen) make(r *Restorer, p Proc, id uint32) (*pipeEnds, error) {
	arr, err := p.Arg(make([]byte, 8))
	if err != nil {
		return nil, err
	}
	if _, err := p.Call("pipe2", unix.SYS_PIPE2, arr, unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	b, err := p.Out(arr, 8)
	if err != nil {
		return nil, err
	}
	ends := &pipeEnds{pid: p.Pid()}
	for i := range ends.fds {
		if ends.fds[i], err = r.Park(p, uint64(binary.LittleEndian.Uint32(b[i*4:]))); err != nil {
			return nil, err
		}
	}
	po.ends[id] = ends
	d := po.data[id]
	if d.capacity != 0 {
		if _, err := p.Call("fcntl(F_SETPIPE_SZ)", unix.SYS_FCNTL, ends.fds[1], unix.F_SETPIPE_SZ, uint64(d.capacity)); err != nil {
			return nil, err
		}
	}
	if len(d.data) > 0 {
		if err := writeThrough(p.Pid(), ends.fds[1], os.O_WRONLY, d.data); err != nil {
			return nil, fmt.Errorf("refill pipe:[%d]: %w", id, err)
		}
	}
	return ends, nil
}

// treeDone closes the parked pipe ends, once every fd of the tree is in
// place: each fd of the image holds a copy of its own.
func (po *pipeOpen) treeDone(r *Restorer) error {
	for _, e := range po.ends {
		p := r.proc(e.pid)
		for i := range e.fds {
			if p != nil {
				if _, err := p.Call("close", unix.SYS_CLOSE, e.fds[i]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

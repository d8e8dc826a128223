package restore

import (
	"time"

	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cryo-project/cryo/internal/procfs"

	"google.golang.org/protobuf/proto"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipedata "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/meta"
)

// ErrNotSupported marks image content this version cannot restore.
var ErrNotSupported = errors.New("not supported yet")

// ErrPidTaken reports that a pid the image needs is in use.
var ErrPidTaken = errors.New("pid in use")

// loaded is a whole image, read and checked.
type loaded struct {
	dir     *image.Dir
	meta    *meta.Meta
	inv     *inventory.InventoryEntry
	tree    *pstree.PstreeEntry
	cores   []*core.CoreEntry // threads in pstree order, leader first
	mm      *mm.MmEntry
	pagemap []*pagemap.PagemapEntry
	pagesID uint32
	files   map[uint32]*fdinfo.FileEntry
	fds     []*fdinfo.FdinfoEntry
	fs      *fs.FsEntry
	seccomp *seccomp.SeccompEntry
	memfds  []*memfd.MemfdInodeEntry
	// procs are the tree's processes, parents before children, each a view
	// of this image with its own pstree entry, cores, mm, pages and fds.
	procs  []*loaded
	zombie bool
	// pipeData is the unread data of each pipe, by pipe_id; fifoData the
	// same for FIFOs.
	pipeData, fifoData map[uint32]pipeData
	// skQueues is the unread data of each unix socket, by file id
	// (fd_unix.go).
	skQueues map[uint32][][]byte
}

type pipeData struct {
	data     []byte
	capacity uint32
}

func readAll[T proto.Message](dir *image.Dir, name, magic string, mk func() T) ([]T, error) {
	r, err := dir.Open(name, magic)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []T
	for {
		m := mk()
		if err := r.Next(m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		out = append(out, m)
	}
}

func load(path string) (*loaded, error) {
	dir, err := image.Open(path)
	if err != nil {
		return nil, err
	}
	l := &loaded{dir: dir, files: map[uint32]*fdinfo.FileEntry{}}
	if l.meta, err = meta.Read(dir); err != nil {
		return nil, err
	}
	l.inv = &inventory.InventoryEntry{}
	if err := dir.ReadOne("inventory.img", "INVENTORY", l.inv); err != nil {
		return nil, err
	}
	trees, err := readAll(dir, "pstree.img", "PSTREE", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return nil, err
	}
	if len(trees) == 0 {
		return nil, &image.FormatError{File: "pstree.img", Offset: 0, Err: fmt.Errorf("no process: %w", image.ErrImageCorrupt)}
	}
	files, err := readAll(dir, "files.img", "FILES", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		l.files[f.GetId()] = f
	}
	seen := map[uint32]bool{}
	for i, te := range trees {
		pl, err := l.loadProcess(te, i == 0)
		if err != nil {
			return nil, err
		}
		if !seen[te.GetPpid()] && i > 0 {
			return nil, &image.FormatError{File: "pstree.img", Offset: -1, Err: fmt.Errorf("process %d comes before its parent %d: %w", te.GetPid(), te.GetPpid(), image.ErrImageCorrupt)}
		}
		seen[te.GetPid()] = true
		l.procs = append(l.procs, pl)
	}
	// The root's view doubles as the tree's for the code that restores one
	// process.
	root := l.procs[0]
	l.tree, l.cores, l.mm, l.pagemap, l.pagesID, l.fds, l.fs = root.tree, root.cores, root.mm, root.pagemap, root.pagesID, root.fds, root.fs
	if dir.Has("memfd-inode.img") {
		if l.memfds, err = readAll(dir, "memfd-inode.img", "MEMFD_INODE", func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} }); err != nil {
			return nil, err
		}
	}
	l.pipeData = map[uint32]pipeData{}
	if dir.Has("pipes-data.img") {
		if err := l.loadPipeData(); err != nil {
			return nil, err
		}
	}
	l.fifoData = map[uint32]pipeData{}
	if dir.Has("fifo-data.img") {
		if err := l.loadPipeFile("fifo-data.img", "FIFO_DATA", l.fifoData); err != nil {
			return nil, err
		}
	}
	if dir.Has("sk-queues.img") {
		if l.skQueues, err = loadSkQueues(dir); err != nil {
			return nil, err
		}
	}
	if dir.Has("seccomp.img") {
		l.seccomp = &seccomp.SeccompEntry{}
		if err := dir.ReadOne("seccomp.img", "SECCOMP", l.seccomp); err != nil {
			return nil, err
		}
	}
	for _, p := range l.procs {
		p.memfds, p.pipeData, p.fifoData, p.seccomp = l.memfds, l.pipeData, l.fifoData, l.seccomp
	}
	return l, nil
}

// loadProcess reads the images of one process of the tree into a view that
// shares the tree's files, memfds, pipe data and seccomp filters.
func (l *loaded) loadProcess(te *pstree.PstreeEntry, root bool) (*loaded, error) {
	dir := l.dir
	pl := &loaded{dir: dir, meta: l.meta, inv: l.inv, files: l.files}
	pl.tree = te
	pid := te.GetPid()
	if len(te.Threads) == 0 || te.Threads[0] != pid {
		return nil, &image.FormatError{File: "pstree.img", Offset: -1, Err: fmt.Errorf("thread list %v does not start with pid %d: %w", te.Threads, pid, image.ErrImageCorrupt)}
	}
	for i, tid := range te.Threads {
		name := fmt.Sprintf("core-%d.img", tid)
		c := &core.CoreEntry{}
		if err := dir.ReadOne(name, "CORE", c); err != nil {
			return nil, err
		}
		if c.GetMtype() != core.CoreEntry_X86_64 {
			return nil, &image.FormatError{File: name, Offset: -1, Err: fmt.Errorf("not an x86_64 thread (machine %v): %w", c.GetMtype(), ErrNotSupported)}
		}
		if i == 0 && c.GetTc() == nil {
			return nil, &image.FormatError{File: name, Offset: -1, Err: fmt.Errorf("leader without task_core: %w", image.ErrImageCorrupt)}
		}
		if i == 0 && c.GetTc().GetTaskState() == taskDead {
			if root || len(te.Threads) != 1 {
				return nil, &image.FormatError{File: name, Offset: -1, Err: fmt.Errorf("a zombie as root or with threads: %w", image.ErrImageCorrupt)}
			}
			pl.zombie = true
			pl.cores = []*core.CoreEntry{c}
			return pl, nil
		}
		if c.GetThreadInfo() == nil || c.GetThreadCore() == nil {
			return nil, &image.FormatError{File: name, Offset: -1, Err: fmt.Errorf("thread without registers: %w", image.ErrImageCorrupt)}
		}
		pl.cores = append(pl.cores, c)
	}
	pl.mm = &mm.MmEntry{}
	if err := dir.ReadOne(fmt.Sprintf("mm-%d.img", pid), "MM", pl.mm); err != nil {
		return nil, err
	}
	var err error
	if pl.pagesID, pl.pagemap, err = readPagemap(dir, fmt.Sprintf("pagemap-%d.img", pid)); err != nil {
		return nil, err
	}
	filesID := pl.cores[0].GetIds().GetFilesId()
	if pl.fds, err = readAll(dir, fmt.Sprintf("fdinfo-%d.img", filesID), "FDINFO", func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} }); err != nil {
		return nil, err
	}
	for _, fd := range pl.fds {
		if _, ok := l.files[fd.GetId()]; !ok {
			return nil, &image.FormatError{File: fmt.Sprintf("fdinfo-%d.img", filesID), Offset: -1, Err: fmt.Errorf("fd %d names file %d, not in files.img: %w", fd.GetFd(), fd.GetId(), image.ErrImageCorrupt)}
		}
	}
	pl.fs = &fs.FsEntry{}
	if err := dir.ReadOne(fmt.Sprintf("fs-%d.img", pid), "FS", pl.fs); err != nil {
		return nil, err
	}
	return pl, nil
}

// exiting says whether pid belongs to a process on its way out: a zombie,
// dead, or past the start of exit (PF_EXITING).
func exiting(pid int) bool {
	st, err := procfs.StatPid(pid)
	if err != nil {
		return false
	}
	const pfExiting = 0x4
	return st.State == 'Z' || st.State == 'X' || st.Flags&pfExiting != 0
}

// CRIU's task_state of a zombie (criu/include/task-entries.h: TASK_DEAD).
const taskDead = 2

// readPagemap reads a pagemap image: its head (which pages file) and entries.
func readPagemap(dir *image.Dir, name string) (uint32, []*pagemap.PagemapEntry, error) {
	r, err := dir.Open(name, "PAGEMAP")
	if err != nil {
		return 0, nil, err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Next(head); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, &image.FormatError{File: name, Offset: r.Offset(), Err: fmt.Errorf("no pagemap head: %w", image.ErrImageCorrupt)}
		}
		return 0, nil, err
	}
	var out []*pagemap.PagemapEntry
	for {
		e := &pagemap.PagemapEntry{}
		off := r.Offset()
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return head.GetPagesId(), out, nil
			}
			return 0, nil, err
		}
		if e.GetInParent() {
			return 0, nil, &image.FormatError{File: name, Offset: off, Err: fmt.Errorf("pages in a parent image (incremental dumps): %w", ErrNotSupported)}
		}
		out = append(out, e)
	}
}

func (l *loaded) loadPipeData() error {
	return l.loadPipeFile("pipes-data.img", "PIPES_DATA", l.pipeData)
}

// loadPipeFile reads unread pipe (or FIFO) data: entries each followed by
// their bytes.
func (l *loaded) loadPipeFile(name, magic string, into map[uint32]pipeData) error {
	r, err := l.dir.Open(name, magic)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		e := &pipedata.PipeDataEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int64(e.GetBytes())
		if n > r.Remaining() || n > 1<<30 {
			return &image.FormatError{File: name, Offset: r.Offset(), Err: fmt.Errorf("pipe data of %d bytes exceeds the file: %w", n, image.ErrImageCorrupt)}
		}
		sr, err := r.Raw(n)
		if err != nil {
			return err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(sr, b); err != nil {
			return &image.FormatError{File: name, Offset: r.Offset(), Err: err}
		}
		into[e.GetPipeId()] = pipeData{data: b, capacity: e.GetSize()}
	}
}

// checkPids fails with the holder's name if a pid or tid the image needs is
// taken. clone3 would say EEXIST later anyway, but only after a stub was
// started, and without saying who holds it.
func (l *loaded) checkPids() error {
	for _, p := range l.procs {
		for _, tid := range p.tree.Threads {
			if err := pidFree(int(tid)); err != nil {
				return err
			}
		}
	}
	return nil
}

func pidFree(pid int) error {
	// A process killed by a dump that just ended may still be tearing down
	// its memory, or be a zombie its parent is about to reap: give it a
	// moment before calling its pid taken.
	for deadline := time.Now().Add(2 * time.Second); exiting(pid) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return nil
	}
	holder := strings.TrimSpace(string(comm))
	// A thread's /proc entry is reachable by its tid too: name its process.
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "Tgid:"); ok && strings.TrimSpace(v) != strconv.Itoa(pid) {
				return fmt.Errorf("pid %d is taken by a thread of process %s (%s): %w", pid, strings.TrimSpace(v), holder, ErrPidTaken)
			}
		}
	}
	return fmt.Errorf("pid %d is taken by process %d (%s): %w", pid, pid, holder, ErrPidTaken)
}

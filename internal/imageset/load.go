package imageset

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/meta"
)

// ErrNotSupported marks image content that is well formed but that this
// version of cryo cannot restore (pages kept in a parent image, a thread of
// another architecture). It is errs.ErrNotSupported.
var ErrNotSupported = errs.ErrNotSupported

// Set is a whole image, read and cross-checked.
type Set struct {
	Dir *image.Dir
	// Meta is cryo's note on the machine the image was taken on; nil in an
	// image cryo did not write.
	Meta      *meta.Meta
	Inventory *inventory.InventoryEntry
	// Procs are the tree's processes in pstree order: every parent before
	// its children, the root first.
	Procs []*Proc
	// Files are files.img's entries by id.
	Files map[uint32]*fdinfo.FileEntry
	// Seccomp is nil when no thread has a filter.
	Seccomp *seccomp.SeccompEntry
	// Stats is the dump's stats-dump entry; nil if the image has none.
	Stats *stats.StatsEntry
}

// Proc is one process of the image.
type Proc struct {
	Tree *pstree.PstreeEntry
	// Cores are its threads' cores in pstree order, the leader first. A
	// zombie has only the leader's, and nothing below.
	Cores  []*core.CoreEntry
	Zombie bool

	Mm      *mm.MmEntry
	PagesID uint32 // the pages file of its memory
	Pagemap []*pagemap.PagemapEntry
	Fds     []*fdinfo.FdinfoEntry
	Fs      *fs.FsEntry
	// Ids is ids-PID.img's entry; nil in an image without it (cryo's before
	// it wrote them, where the core's copy serves).
	Ids *core.TaskKobjIdsEntry
}

// Pid is the process's pid.
func (p *Proc) Pid() uint32 { return p.Tree.GetPid() }

// Load opens the image directory at path (verifying its checksums) and
// reads every image that describes the tree, checking that they agree:
// threads start with their leader, parents come before children, every fd
// and the exe link name a file of files.img.
func Load(path string) (*Set, error) {
	dir, err := image.Open(path)
	if err != nil {
		return nil, err
	}
	s := &Set{Dir: dir, Files: map[uint32]*fdinfo.FileEntry{}}
	if dir.Has(meta.Name) {
		if s.Meta, err = meta.Read(dir); err != nil {
			return nil, err
		}
	}
	s.Inventory = &inventory.InventoryEntry{}
	if err := ReadOne(dir, Inventory, s.Inventory); err != nil {
		return nil, err
	}
	trees, err := ReadAll(dir, Pstree, func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return nil, err
	}
	if len(trees) == 0 {
		return nil, corrupt(Pstree.Name, "no process")
	}
	if dir.Has(Files.Name) {
		files, err := ReadAll(dir, Files, func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if _, dup := s.Files[f.GetId()]; dup {
				return nil, corrupt(Files.Name, "file id %d twice", f.GetId())
			}
			s.Files[f.GetId()] = f
		}
	}
	seen := map[uint32]bool{}
	for i, te := range trees {
		if i > 0 && !seen[te.GetPpid()] {
			return nil, corrupt(Pstree.Name, "process %d comes before its parent %d", te.GetPid(), te.GetPpid())
		}
		if seen[te.GetPid()] {
			return nil, corrupt(Pstree.Name, "process %d twice", te.GetPid())
		}
		p, err := s.loadProc(te, i == 0)
		if err != nil {
			return nil, err
		}
		seen[te.GetPid()] = true
		s.Procs = append(s.Procs, p)
	}
	if dir.Has(Seccomp.Name) {
		s.Seccomp = &seccomp.SeccompEntry{}
		if err := ReadOne(dir, Seccomp, s.Seccomp); err != nil {
			return nil, err
		}
	}
	if dir.Foreign() {
		if err := s.checkForeign(); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{StatsDump.Name, StatsDumpOld} {
		if dir.Has(name) {
			s.Stats = &stats.StatsEntry{}
			if err := ReadOne(dir, File{name, StatsDump.Magic}, s.Stats); err != nil {
				return nil, err
			}
			break
		}
	}
	return s, nil
}

func (s *Set) loadProc(te *pstree.PstreeEntry, root bool) (*Proc, error) {
	dir := s.Dir
	pid := te.GetPid()
	p := &Proc{Tree: te}
	if len(te.Threads) == 0 || te.Threads[0] != pid {
		return nil, corrupt(Pstree.Name, "thread list %v of process %d does not start with its pid", te.Threads, pid)
	}
	for i, tid := range te.Threads {
		f := Core(tid)
		c := &core.CoreEntry{}
		if err := ReadOne(dir, f, c); err != nil {
			return nil, err
		}
		if c.GetMtype() != core.CoreEntry_X86_64 {
			return nil, &image.FormatError{File: f.Name, Offset: -1, Err: fmt.Errorf("not an x86_64 thread (machine %v): %w", c.GetMtype(), ErrNotSupported)}
		}
		if i == 0 && c.GetTc() == nil {
			return nil, corrupt(f.Name, "leader without task_core")
		}
		if i == 0 && c.GetTc().GetTaskState() == TaskDead {
			if root || len(te.Threads) != 1 {
				return nil, corrupt(f.Name, "a zombie as root or with threads")
			}
			p.Zombie = true
			p.Cores = []*core.CoreEntry{c}
			if err := s.useIds(p); err != nil {
				return nil, err
			}
			return p, nil
		}
		if c.GetThreadInfo() == nil || c.GetThreadCore() == nil {
			return nil, corrupt(f.Name, "thread without registers")
		}
		p.Cores = append(p.Cores, c)
	}
	p.Mm = &mm.MmEntry{}
	if err := ReadOne(dir, Mm(pid), p.Mm); err != nil {
		return nil, err
	}
	if exe := p.Mm.GetExeFileId(); s.Files[exe].GetReg() == nil {
		return nil, corrupt(Mm(pid).Name, "exe file %d is not a regular file of %s", exe, Files.Name)
	}
	var err error
	if p.PagesID, p.Pagemap, err = ReadPagemap(dir, Pagemap(pid)); err != nil {
		return nil, err
	}
	if err := s.checkPages(p); err != nil {
		return nil, err
	}
	if err := s.useIds(p); err != nil {
		return nil, err
	}
	if p.Cores[0].GetIds() == nil {
		return nil, corrupt(Core(pid).Name, "no ids (which fd table)")
	}
	fdf := Fdinfo(p.Cores[0].GetIds().GetFilesId())
	if p.Fds, err = ReadAll(dir, fdf, func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} }); err != nil {
		return nil, err
	}
	nums := map[uint32]bool{}
	for _, fd := range p.Fds {
		if _, ok := s.Files[fd.GetId()]; !ok {
			return nil, corrupt(fdf.Name, "fd %d names file %d, not in %s", fd.GetFd(), fd.GetId(), Files.Name)
		}
		if nums[fd.GetFd()] {
			return nil, corrupt(fdf.Name, "fd %d twice", fd.GetFd())
		}
		nums[fd.GetFd()] = true
	}
	p.Fs = &fs.FsEntry{}
	if err := ReadOne(dir, Fs(pid), p.Fs); err != nil {
		return nil, err
	}
	for _, id := range []uint32{p.Fs.GetCwdId(), p.Fs.GetRootId()} {
		if s.Files[id].GetReg() == nil {
			return nil, corrupt(Fs(pid).Name, "cwd or root %d is not a regular file of %s", id, Files.Name)
		}
	}
	return p, nil
}

// ReadAll reads every entry of f, each into a new message made by mk.
func ReadAll[T proto.Message](dir *image.Dir, f File, mk func() T) ([]T, error) {
	r, err := dir.Open(f.Name, f.Magic)
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

// ReadOne reads the only entry of f into m.
func ReadOne(dir *image.Dir, f File, m proto.Message) error {
	return dir.ReadOne(f.Name, f.Magic, m)
}

// Write creates f in dir holding msgs.
func Write(dir *image.Dir, f File, msgs ...proto.Message) error {
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			w.Close()
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	return nil
}

// ReadPagemap reads a pagemap image: its head (which pages file) and its
// entries. Pages kept in a parent image are refused until incremental
// dumps exist.
func ReadPagemap(dir *image.Dir, f File) (uint32, []*pagemap.PagemapEntry, error) {
	r, err := dir.Open(f.Name, f.Magic)
	if err != nil {
		return 0, nil, err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Next(head); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, &image.FormatError{File: f.Name, Offset: r.Offset(), Err: fmt.Errorf("no pagemap head: %w", image.ErrImageCorrupt)}
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
		if e.NrPages == nil {
			// CRIU before 3.16 wrote only the 32-bit count.
			e.NrPages = proto.Uint64(uint64(e.GetCompatNrPages()))
		}
		if e.GetInParent() {
			return 0, nil, &image.FormatError{File: f.Name, Offset: off, Err: fmt.Errorf("pages in a parent image (incremental dumps): %w", ErrNotSupported)}
		}
		out = append(out, e)
	}
}

func corrupt(file, format string, args ...any) error {
	return &image.FormatError{File: file, Offset: -1, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
}

// WriteLoose writes f beside a committed image in the directory at dir
// (image.WriteLoose).
func WriteLoose(dir string, f File, msgs ...proto.Message) error {
	return image.WriteLoose(filepath.Join(dir, f.Name), f.Magic, msgs...)
}

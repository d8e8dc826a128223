package files

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// memfds. A memfd is an open file description on a shmem inode. The inode
// (name, size, seals, contents) is dumped once however many fds and
// mappings use it, as CRIU does: memfd-inode.img, and the contents in
// pagemap-shmem-<inode id>.img with its pages file. Restore creates each
// inode once, in the first process that needs it (for an fd or a
// mapping), and every open of it is a new description reopened through
// /proc/self/fd, with its own flags and offset, as the original had.
var memfdKind = Kind{
	Name:    "memfd",
	Type:    fdinfo.FdTypes_MEMFD,
	Dump:    func() dumper { return &memfdDump{byIno: map[uint64]*memfdInode{}} },
	Restore: func() opener { return &memfdOpen{made: map[uint32]Owner{}, fds: map[[2]int]uint64{}} },
	Describe: func(f *fdinfo.FileEntry) Description {
		m := f.GetMemfd()
		return Description{Path: fmt.Sprintf("memfd inode %d", m.GetInodeId()), HasFlags: true, Flags: m.GetFlags(), Pos: m.GetPos()}
	},
}

type memfdInode struct {
	entry *memfd.MemfdInodeEntry
	src   *os.File // reads the contents
}

type memfdDump struct {
	byIno  map[uint64]*memfdInode
	inodes []*memfdInode
}

func (*memfdDump) match(fd *Fd) bool {
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFREG && strings.HasPrefix(fd.Link, "/memfd:")
}

func (md *memfdDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	f, err := os.Open(fd.Path)
	if err != nil {
		return 0, fmt.Errorf("open memfd %s: %w", fd.Link, err)
	}
	return md.add(d, f, fd.Link, fd.Flags, uint64(fd.Info.Pos))
}

// add registers a description of the memfd that f (an fd or map_files
// link, which add keeps or closes) opens, and returns its file id.
func (md *memfdDump) add(d *Dumper, f *os.File, link string, flags uint32, pos uint64) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return 0, err
	}
	ino, ok := md.byIno[st.Ino]
	if !ok {
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil {
			seals = 0 // created without MFD_ALLOW_SEALING: F_SEAL_SEAL, which reads back as EINVAL on some kernels
		}
		id := uint32(len(md.inodes) + 1)
		ino = &memfdInode{src: f, entry: &memfd.MemfdInodeEntry{
			Name:    proto.String(strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")),
			Uid:     proto.Uint32(st.Uid),
			Gid:     proto.Uint32(st.Gid),
			Size:    proto.Uint64(uint64(st.Size)),
			Shmid:   proto.Uint32(id),
			Seals:   proto.Uint32(uint32(seals)),
			InodeId: proto.Uint64(uint64(id)),
			Mode:    proto.Uint32(st.Mode),
		}}
		md.byIno[st.Ino] = ino
		md.inodes = append(md.inodes, ino)
		d.keep(f)
	} else {
		f.Close()
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Memfd: &memfd.MemfdFileEntry{
			Flags: proto.Uint32(flags), Pos: proto.Uint64(pos), Fown: noOwner(),
			InodeId: proto.Uint32(uint32(ino.entry.GetInodeId())),
		},
	}), nil
}

func (md *memfdDump) writeSide(_ *Dumper, s *Side) error {
	if len(md.inodes) == 0 {
		return nil
	}
	msgs := make([]proto.Message, len(md.inodes))
	for i, ino := range md.inodes {
		msgs[i] = ino.entry
	}
	if err := imageset.Write(s.Dir, imageset.MemfdInode, msgs...); err != nil {
		return err
	}
	for _, ino := range md.inodes {
		if err := s.Shmem(ino.entry.GetShmid(), ino.src, int64(ino.entry.GetSize())); err != nil {
			return fmt.Errorf("memfd %s: %w", ino.entry.GetName(), err)
		}
	}
	return nil
}

type memfdOpen struct {
	inodes map[uint32]*memfd.MemfdInodeEntry
	made   map[uint32]Owner  // inode id → the fd of the process that made it
	fds    map[[2]int]uint64 // (pid, inode id) → that process's fd on the inode
}

func (mo *memfdOpen) loadSide(r *Restorer) error {
	mo.inodes = map[uint32]*memfd.MemfdInodeEntry{}
	dir := r.set.Dir
	if !dir.Has(imageset.MemfdInode.Name) {
		return nil
	}
	ents, err := imageset.ReadAll(dir, imageset.MemfdInode, func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} })
	if err != nil {
		return err
	}
	for _, e := range ents {
		mo.inodes[uint32(e.GetInodeId())] = e
	}
	return nil
}

// MemfdFd returns an fd of p on memfd inode id, creating the memfd (name,
// size, contents) if no process of the tree has made it yet, or taking the
// maker's with pidfd_getfd: for memfd mappings, which restore maps from
// it. The fd stays open until Finish.
func (r *Restorer) MemfdFd(p Proc, id uint32) (uint64, error) {
	r.seen(p)
	return restoreHalf[*memfdOpen](r).fd(r, p, id)
}

func (mo *memfdOpen) fd(r *Restorer, p Proc, id uint32) (uint64, error) {
	key := [2]int{p.Pid(), int(id)}
	if fd, ok := mo.fds[key]; ok {
		return fd, nil
	}
	var fd uint64
	if o, ok := mo.made[id]; ok {
		got, err := r.Take(p, o)
		if err != nil {
			return 0, fmt.Errorf("memfd inode %d: %w", id, err)
		}
		fd = got
	} else {
		ino := mo.inodes[id]
		if ino == nil {
			return 0, &image.FormatError{File: imageset.MemfdInode.Name, Offset: -1, Err: fmt.Errorf("no memfd inode %d: %w", id, image.ErrImageCorrupt)}
		}
		s, err := p.Str(ino.GetName())
		if err != nil {
			return 0, err
		}
		if fd, err = p.Call("memfd_create "+ino.GetName(), unix.SYS_MEMFD_CREATE, s, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err != nil {
			return 0, err
		}
		if _, err := p.Call("ftruncate memfd", unix.SYS_FTRUNCATE, fd, ino.GetSize()); err != nil {
			return 0, err
		}
		if err := fillShmem(r.set.Dir, p.Pid(), fd, ino.GetShmid()); err != nil {
			return 0, fmt.Errorf("memfd %s: %w", ino.GetName(), err)
		}
		if err := giveMemfdBack(p, fd, ino); err != nil {
			return 0, fmt.Errorf("memfd %s: %w", ino.GetName(), err)
		}
	}
	fd, err := r.Park(p, fd)
	if err != nil {
		return 0, err
	}
	if _, ok := mo.made[id]; !ok {
		mo.made[id] = Owner{Pid: p.Pid(), Fd: fd}
	}
	mo.fds[key] = fd
	return fd, nil
}

// giveMemfdBack gives a re-created memfd what its inode had besides its
// contents: the size (the contents go back in whole pages), the mode and
// the owner. CRIU's image keeps no times of a memfd.
func giveMemfdBack(p Proc, fd uint64, ino *memfd.MemfdInodeEntry) error {
	if _, err := p.Call("ftruncate memfd", unix.SYS_FTRUNCATE, fd, ino.GetSize()); err != nil {
		return err
	}
	if _, err := p.Call("fchmod memfd", unix.SYS_FCHMOD, fd, uint64(ino.GetMode()&0o7777)); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", p.Pid(), fd), &st); err != nil {
		return err
	}
	if st.Uid != ino.GetUid() || st.Gid != ino.GetGid() {
		if _, err := p.Call("fchown memfd", unix.SYS_FCHOWN, fd, uint64(ino.GetUid()), uint64(ino.GetGid())); err != nil {
			return fmt.Errorf("give it its owner %d:%d: %w", ino.GetUid(), ino.GetGid(), err)
		}
		// chown clears the set-id bits: the mode once more.
		if _, err := p.Call("fchmod memfd", unix.SYS_FCHMOD, fd, uint64(ino.GetMode()&0o7777)); err != nil {
			return err
		}
	}
	return nil
}

// open opens a new description of a re-created memfd: reopening it
// through /proc/self/fd gives its own flags and offset.
func (mo *memfdOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	m := f.GetMemfd()
	ifd, err := mo.fd(r, p, m.GetInodeId())
	if err != nil {
		return 0, err
	}
	s, err := p.Str(fmt.Sprintf("/proc/self/fd/%d", ifd))
	if err != nil {
		return 0, err
	}
	fd, err := p.Call("reopen memfd", unix.SYS_OPENAT, atFdcwd, s, uint64(m.GetFlags()&^unix.O_CREAT|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, err
	}
	if pos := m.GetPos(); pos != 0 {
		if _, err := p.Call("lseek", unix.SYS_LSEEK, fd, pos, unix.SEEK_SET); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// treeDone seals each memfd (seals last: they may forbid the writes that
// put the contents back), then closes every process's fd on the inodes.
func (mo *memfdOpen) treeDone(r *Restorer) error {
	for id, o := range mo.made {
		ino := mo.inodes[id]
		p := r.proc(o.Pid)
		if s := ino.GetSeals(); s != 0 && p != nil {
			if _, err := p.Call("fcntl(F_ADD_SEALS)", unix.SYS_FCNTL, o.Fd, unix.F_ADD_SEALS, uint64(s)); err != nil {
				return fmt.Errorf("memfd %s: seals %#x: %w", ino.GetName(), s, err)
			}
		}
	}
	for key, fd := range mo.fds {
		if p := r.proc(key[0]); p != nil {
			if _, err := p.Call("close memfd", unix.SYS_CLOSE, fd); err != nil {
				return err
			}
		}
	}
	mo.fds = map[[2]int]uint64{}
	return nil
}

// fillShmem writes the contents of a shared object (pagemap-shmem-ID.img)
// through fd of process pid, which cryo reopens through /proc.
func fillShmem(dir *image.Dir, pid int, fd uint64, shmid uint32) error {
	pm := imageset.PagemapShmem(shmid)
	pagesID, entries, err := imageset.ReadPagemap(dir, pm)
	if err != nil {
		return err
	}
	pr, err := dir.OpenPages(pagesID)
	if err != nil {
		return err
	}
	defer pr.Close()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, e := range entries {
		off, n := int64(e.GetVaddr()), int64(e.GetNrPages())*pageSize
		if off < 0 || n < 0 || off+n < off {
			return &image.FormatError{File: pm.Name, Offset: -1, Err: fmt.Errorf("range %#x+%d: %w", off, n, image.ErrImageCorrupt)}
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := io.ReadFull(pr, buf[:k]); err != nil {
				return err
			}
			if _, err := f.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off += k
			n -= k
		}
	}
	return nil
}

const pageSize = 4096

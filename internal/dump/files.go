package dump

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// fileTable assigns ids to the files a process uses (through fds, mappings,
// its exe, cwd and root) and remembers which must be copied as ghosts.
type fileTable struct {
	next    uint32
	entries []*fdinfo.FileEntry
	byKey   map[fileKey]uint32
	ghosts  map[uint32]ghost
	// opened lists the fds seen so far in the tree, by inode, to find open
	// file descriptions shared between fds with kcmp.
	opened map[fileIno][]openFd

	pipes       map[uint64]*pipeState
	pipeOrder   []*pipeState
	memfdByIno  map[uint64]*memfdInode
	memfdInodes []*memfdInode
	nextInode   uint32
	unix        *unixTable // unix sockets, made on the first (fd_unix.go)
}

// fileKey identifies a file opened with given flags, for files reached
// through mappings, exe, cwd and root, where no open file description has to
// be shared.
type fileKey struct {
	dev, ino uint64
	flags    uint32
}

type fileIno struct{ dev, ino uint64 }

type openFd struct {
	pid, fd int
	id      uint32
}

// sharedWith returns the id of an fd already seen that shares its open file
// description with fd of pid (kcmp KCMP_FILE), or 0.
func (ft *fileTable) sharedWith(pid, fd int, st *unix.Stat_t) uint32 {
	for _, o := range ft.opened[fileIno{st.Dev, st.Ino}] {
		if r, err := kabi.Kcmp(o.pid, pid, kabi.KCMP_FILE, uintptr(o.fd), uintptr(fd)); err == nil && r == 0 {
			return o.id
		}
	}
	return 0
}

type ghost struct {
	src   *os.File
	entry *ghost_file.GhostFileEntry
}

func newFileTable() *fileTable {
	return &fileTable{next: 1, byKey: map[fileKey]uint32{}, ghosts: map[uint32]ghost{}, opened: map[fileIno][]openFd{},
		pipes: map[uint64]*pipeState{}, memfdByIno: map[uint64]*memfdInode{}}
}

func (ft *fileTable) add(e *fdinfo.FileEntry) uint32 {
	id := ft.next
	ft.next++
	e.Id = proto.Uint32(id)
	// CRIU repeats the id inside the entry of the file's type (reg, pipe,
	// efd...): set it in whichever one is there, so that a new fd type
	// needs no line here.
	m := e.ProtoReflect()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind {
			sub := v.Message()
			if f := sub.Descriptor().Fields().ByName("id"); f != nil && f.Kind() == protoreflect.Uint32Kind {
				sub.Set(f, protoreflect.ValueOfUint32(id))
			}
		}
		return true
	})
	ft.entries = append(ft.entries, e)
	return id
}

func regEntry(name string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Reg: &regfile.RegFileEntry{
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(pos),
			Fown:  &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)},
			Name:  proto.String(name),
			Size:  proto.Uint64(uint64(st.Size)),
			Mode:  proto.Uint32(st.Mode),
		},
	}
}

// byPath registers a file reached through a path-like link (exe, cwd, root,
// a mapping). open gives a handle on the very inode, for ghosts.
func (ft *fileTable) byPath(p *process, what, link string, flags uint32, open func() (*os.File, error)) (uint32, error) {
	f, err := open()
	if err != nil {
		return 0, fmt.Errorf("%s of %d (%s): %w", what, p.pid, link, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return 0, fmt.Errorf("%s of %d (%s): %w", what, p.pid, link, err)
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, flags: flags}
	if id, ok := ft.byKey[key]; ok {
		f.Close()
		return id, nil
	}
	name := strings.TrimSuffix(link, " (deleted)")
	e := regEntry(name, flags, 0, &st)
	id := ft.add(e)
	ft.byKey[key] = id
	if st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		ft.addGhost(id, f, &st)
	} else {
		f.Close()
	}
	return id, nil
}

// addGhost records that file id is unlinked: its whole contents go into the
// image, whatever their size (no ghost limit: a restore that cannot bring the
// file back is worse than a large image).
func (ft *fileTable) addGhost(id uint32, f *os.File, st *unix.Stat_t) {
	ft.ghosts[id] = ghost{src: f, entry: &ghost_file.GhostFileEntry{
		Uid:  proto.Uint32(st.Uid),
		Gid:  proto.Uint32(st.Gid),
		Mode: proto.Uint32(st.Mode),
		Dev:  proto.Uint32(uint32(st.Dev)),
		Ino:  proto.Uint64(st.Ino),
		Size: proto.Uint64(uint64(st.Size)),
	}}
}

func (ft *fileTable) regForVMA(p *process, m procfs.Mapping) (uint32, error) {
	flags := uint32(unix.O_RDONLY)
	if m.Perms.Shared && m.Perms.Write {
		flags = unix.O_RDWR
	}
	return ft.byPath(p, "mapping "+fmt.Sprintf("%#x-%#x", m.Start, m.End), m.RawPath, flags, func() (*os.File, error) {
		return p.mapFile(m)
	})
}

func (ft *fileTable) memfdForVMA(p *process, m procfs.Mapping) (uint32, error) {
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, m.Start, m.End)
	return ft.memfdFile(p, path, m.RawPath, unix.O_RDWR, 0)
}

// ttyMajors are the character devices of terminals: /dev/tty (5), the
// console and virtual terminals (4), and pseudo-terminal slaves (136-143).
func isTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// simpleDevices are character devices that carry no state: reopening them
// by path restores them.
var simpleDevices = map[[2]uint32]bool{
	{1, 3}: true, // null
	{1, 5}: true, // zero
	{1, 7}: true, // full
	{1, 8}: true, // random
	{1, 9}: true, // urandom
}

// collectFds dumps the fd table. An fd of a type cryo cannot restore yet
// fails the dump, naming the fd, its type and link.
func (p *process) collectFds() error {
	dir := "/proc/" + strconv.Itoa(p.pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("fds of %d: %w", p.pid, err)
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, fd)
		}
	}
	sort.Ints(fds)
	for _, fd := range fds {
		path := dir + "/" + strconv.Itoa(fd)
		link, err := os.Readlink(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // closed by now: the process was running until frozen... not possible once frozen
			}
			return fmt.Errorf("fd %d of %d: %w", fd, p.pid, err)
		}
		info, err := procfs.FdinfoPid(p.pid, fd)
		if err != nil {
			return fmt.Errorf("fd %d (%s) of %d: %w", fd, link, p.pid, err)
		}
		unsupported := func(kind string) error {
			return fmt.Errorf("fd %d (%s, %s) of pid %d: %w", fd, kind, link, p.pid, ErrNotSupported)
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return fmt.Errorf("fd %d (%s) of %d: %w", fd, link, p.pid, err)
		}
		fdFlags := uint32(0)
		if info.Flags&unix.O_CLOEXEC != 0 {
			fdFlags = unix.FD_CLOEXEC
		}
		fileFlags := info.Flags &^ unix.O_CLOEXEC
		// An open file description shared by two fds (dup, inherited
		// across fork, passed over a socket) must stay one, in this
		// process and across the tree.
		shared := p.files.sharedWith(p.pid, fd, &st)
		var id uint32
		var kind *fdKind
		if shared == 0 {
			for i := range fdKinds {
				if fdKinds[i].match(link, &st) {
					kind = &fdKinds[i]
					break
				}
			}
			if kind == nil {
				typ := strings.SplitN(strings.TrimPrefix(link, "anon_inode:"), ":", 2)[0]
				if st.Mode&unix.S_IFMT != unix.S_IFREG && !strings.HasPrefix(link, "anon_inode:") && !strings.Contains(link, ":[") {
					typ = fmt.Sprintf("mode %#o", st.Mode&unix.S_IFMT)
				}
				return unsupported(typ)
			}
			fe := fdEnv{p: p, fd: fd, path: path, link: link, info: info, st: &st, flags: fileFlags}
			var err error
			if id, err = kind.dump(&fe); err != nil {
				if errors.Is(err, ErrNotSupported) {
					return fmt.Errorf("fd %d (%s) of pid %d: %w", fd, link, p.pid, err)
				}
				return fmt.Errorf("fd %d (%s) of %d: %w", fd, link, p.pid, err)
			}
		} else {
			id = shared
		}
		p.files.opened[fileIno{st.Dev, st.Ino}] = append(p.files.opened[fileIno{st.Dev, st.Ino}], openFd{pid: p.pid, fd: fd, id: id})
		typ := p.files.entries[id-1].GetType()
		p.fds = append(p.fds, &fdinfo.FdinfoEntry{
			Id:    proto.Uint32(id),
			Flags: proto.Uint32(fdFlags),
			Type:  typ.Enum(),
			Fd:    proto.Uint32(uint32(fd)),
		})
	}
	return nil
}

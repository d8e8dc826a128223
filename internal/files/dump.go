package files

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// DumpOptions is what a dump of files depends on beyond the fds.
type DumpOptions struct {
	// Root is the pid of the dumped tree's root: a pidfd may only name a
	// process of the tree.
	Root int
	// ShellJob lets terminals be dumped, to be re-attached to the terminal
	// of `cryo restore` (criu's --shell-job). The zero value refuses them.
	ShellJob bool
	// FileLocks dumps the tree's file locks into file-locks.img (criu's
	// --file-locks). The zero value refuses a tree that holds any.
	FileLocks bool
	// GhostLimit is the largest deleted file whose contents the image may
	// hold, in bytes (criu's --ghost-limit); 0 means no limit.
	GhostLimit int64
	// KeepOutside lets a UNIX stream or seqpacket socket connected to a
	// peer outside the tree be dumped: the dump's keeper holds it until
	// the restore takes it back (package keeper). The zero value refuses
	// such a socket, as --leave-running must (the tree keeps it).
	KeepOutside bool
	// TCPEstablished dumps established TCP connections by TCP repair
	// (criu's --tcp-established; tcp.go). The zero value refuses them.
	TCPEstablished bool
	// TCPClose dumps them without their state (criu's dump --tcp-close):
	// they are restored aborted, with restore --tcp-close only.
	TCPClose bool
	// Log receives notes on what the restore will need; nil discards them.
	Log *slog.Logger
}

// log is the dump's logger, or one that discards.
func (d *Dumper) log() *slog.Logger {
	if d.opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.opts.Log
}

// Dumper records the files of one dumped tree, process after process.
type Dumper struct {
	opts    DumpOptions
	next    uint32
	entries []*fdinfo.FileEntry
	byKey   map[fileKey]uint32
	ghosts  map[uint32]ghost
	// opened lists the fds seen so far in the tree, by inode, to find open
	// file descriptions shared between fds with kcmp.
	opened  map[fileIno][]openFd
	kinds   []dumper // the kinds' dump halves, in table order
	closers []io.Closer
	locks   lockDump
	owners  []ownedFd // fds whose SIGIO goes to someone (fown.go)
}

// fileKey identifies a file opened with given flags, for files reached
// through mappings, exe, cwd and root, where no open file description has
// to be shared.
type fileKey struct {
	dev, ino uint64
	flags    uint32
}

type fileIno struct{ dev, ino uint64 }

type openFd struct {
	pid, fd int
	id      uint32
}

// NewDumper starts the files of a dump.
func NewDumper(opts DumpOptions) *Dumper {
	d := &Dumper{opts: opts, next: 1, byKey: map[fileKey]uint32{}, ghosts: map[uint32]ghost{}, opened: map[fileIno][]openFd{}, locks: newLockDump()}
	for _, k := range table {
		if k.Dump != nil {
			d.kinds = append(d.kinds, k.Dump())
		}
	}
	dumpHalf[*unixDump](d).keepOutside = opts.KeepOutside
	return d
}

// dumpHalf returns the dump half of type T.
func dumpHalf[T dumper](d *Dumper) T {
	for _, k := range d.kinds {
		if t, ok := k.(T); ok {
			return t
		}
	}
	panic(fmt.Sprintf("files: no dump half %T in the table", *new(T)))
}

// Fd is one fd of a process being dumped, as a kind sees it.
type Fd struct {
	Pid, Num int
	Path     string // /proc/PID/fd/N
	Link     string // what the link says
	Info     *procfs.Fdinfo
	Stat     *unix.Stat_t
	Flags    uint32 // file status flags, O_CLOEXEC removed
	cp       int    // cryo's copy of the open file description, or -1
	pidfd    int    // a pidfd of Pid that Copy uses, or -1 (one of its own)
	sock     *sockAddr
}

// Copy returns cryo's own copy of the open file description (pidfd_getfd,
// close-on-exec): sockets and anonymous-inode files cannot be reopened
// through /proc/PID/fd, and some state only shows through syscalls on the
// file. It is the very description of the process: changing its file
// status flags changes the process's. Closed once the fd is dumped.
func (fd *Fd) Copy() (int, error) {
	if fd.cp >= 0 {
		return fd.cp, nil
	}
	if fd.pidfd < 0 {
		cp, err := kabi.GetFd(fd.Pid, fd.Num)
		if err != nil {
			return -1, err
		}
		fd.cp = cp
		return cp, nil
	}
	cp, err := unix.PidfdGetfd(fd.pidfd, fd.Num, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd.Num, fd.Pid, err)
	}
	fd.cp = cp
	return cp, nil
}

func (fd *Fd) close() {
	if fd.cp >= 0 {
		unix.Close(fd.cp)
		fd.cp = -1
	}
}

// Add puts entry e into files.img and returns its new id. CRIU repeats the
// id inside the entry of the file's kind (reg, pipe, efd...): it is set in
// whichever one is there, so that a new kind needs no line here.
func (d *Dumper) Add(e *fdinfo.FileEntry) uint32 {
	id := d.next
	d.next++
	e.Id = proto.Uint32(id)
	e.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			sub := v.Message()
			if f := sub.Descriptor().Fields().ByName("id"); f != nil && f.Kind() == protoreflect.Uint32Kind {
				sub.Set(f, protoreflect.ValueOfUint32(id))
			}
		}
		return true
	})
	d.entries = append(d.entries, e)
	return id
}

// Entry returns the entry with id id.
func (d *Dumper) Entry(id uint32) *fdinfo.FileEntry { return d.entries[id-1] }

// Entries are files.img's entries, in id order.
func (d *Dumper) Entries() []*fdinfo.FileEntry { return d.entries }

// keep closes c when the dump is done.
func (d *Dumper) keep(c io.Closer) { d.closers = append(d.closers, c) }

// Close closes every file the dump held open (ghost sources, memfds).
func (d *Dumper) Close() {
	for _, c := range d.closers {
		c.Close()
	}
	d.closers = nil
}

// noOwner is an fown entry of a file with no owner (F_SETOWN never used).
func noOwner() *fown.FownEntry {
	z := proto.Uint32(0)
	return &fown.FownEntry{Uid: z, Euid: z, Signum: z, PidType: z, Pid: z}
}

func regEntry(name string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Reg: &regfile.RegFileEntry{
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(pos),
			Fown:  noOwner(),
			Name:  proto.String(name),
			Size:  proto.Uint64(uint64(st.Size)),
			Mode:  proto.Uint32(st.Mode),
		},
	}
}

// checkReachable refuses a file restore could not open again by the path
// its link shows, st being the file's own stat: restore would fail to open
// it after the dump had ended the process, or open another file. A file
// with no name left is refused unless it is a regular one (its contents
// go into the image, a ghost): a removed directory, a deleted FIFO or
// device node cannot be put back where the program had it. A file with a
// name must be found at that name: not one deleted here but linked
// elsewhere, not one on a filesystem the path does not reach from cryo's
// root (a POSIX message queue shows as /NAME), not one whose name now
// holds another file.
func checkReachable(link string, st *unix.Stat_t) error {
	if st.Nlink != 0 {
		path := strings.TrimSuffix(link, " (deleted)")
		var at unix.Stat_t
		err := unix.Stat(path, &at)
		switch {
		case path != link:
			return fmt.Errorf("deleted here but still linked elsewhere (%d links), which cryo cannot find by a name yet: %w", st.Nlink, errs.ErrNotSupported)
		case err != nil:
			return fmt.Errorf("not found at %s (%v): a file of a filesystem that path does not reach, such as a POSIX message queue: %w", path, err, errs.ErrNotSupported)
		case at.Dev != st.Dev || at.Ino != st.Ino:
			return fmt.Errorf("%s names another file now (inode %d, not %d): %w", path, at.Ino, st.Ino, errs.ErrNotSupported)
		}
		return nil
	}
	what := map[uint32]string{unix.S_IFDIR: "a directory removed", unix.S_IFIFO: "a FIFO deleted", unix.S_IFCHR: "a character device node deleted",
		unix.S_IFBLK: "a block device node deleted", unix.S_IFSOCK: "a socket file deleted", unix.S_IFLNK: "a symbolic link deleted"}[st.Mode&unix.S_IFMT]
	if what == "" {
		return nil
	}
	return fmt.Errorf("%s since it was opened, which cryo cannot re-create yet: %w", what, errs.ErrNotSupported)
}

// ByPath registers a file a process reaches through a path-like link
// (exe, cwd, root, a mapping) rather than an fd. open gives a handle on
// the very inode, for ghosts. Such files share no open file description:
// one entry per inode and flags serves every process.
func (d *Dumper) ByPath(pid int, what, link string, flags uint32, open func() (*os.File, error)) (uint32, error) {
	f, err := open()
	if err != nil {
		return 0, fmt.Errorf("%s of %d (%s): %w", what, pid, link, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return 0, fmt.Errorf("%s of %d (%s): %w", what, pid, link, err)
	}
	if err := checkReachable(link, &st); err != nil {
		f.Close()
		return 0, fmt.Errorf("%s of %d (%s): %w", what, pid, link, err)
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, flags: flags}
	if id, ok := d.byKey[key]; ok {
		f.Close()
		return id, nil
	}
	id := d.Add(regEntry(strings.TrimSuffix(link, " (deleted)"), flags, 0, &st))
	d.byKey[key] = id
	if st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		if err := d.addGhost(id, link, f, &st); err != nil {
			return 0, fmt.Errorf("%s of %d: %w", what, pid, err)
		}
	} else {
		f.Close()
	}
	return id, nil
}

// Mapping registers the file behind a file mapping of pid: a memfd by its
// inode, anything else by path. open gives a handle on the mapped inode
// (its map_files link).
func (d *Dumper) Mapping(pid int, m procfs.Mapping, open func() (*os.File, error)) (uint32, error) {
	if err := d.noteMapping(pid, m); err != nil {
		return 0, err
	}
	what := fmt.Sprintf("mapping %#x-%#x", m.Start, m.End)
	if strings.HasPrefix(m.Path, "/memfd:") {
		f, err := open()
		if err != nil {
			return 0, fmt.Errorf("%s of %d (%s): %w", what, pid, m.RawPath, err)
		}
		return dumpHalf[*memfdDump](d).add(d, f, m.RawPath, unix.O_RDWR, 0)
	}
	id, err := d.ByPath(pid, what, m.RawPath, mappingFlags(pid, m), open)
	if err == nil {
		d.locks.noteMapped(pid, m, id)
	}
	return id, err
}

// mappingFlags is the open mode of the file behind mapping m: the mode of
// its map_files link, which the kernel derives from the file's f_mode, so a
// private mapping of a file opened O_RDWR is restored on a file opened
// O_RDWR too. Without the link (it cannot be read), a shared writable
// mapping needs O_RDWR and anything else O_RDONLY.
func mappingFlags(pid int, m procfs.Mapping) uint32 {
	fi, err := os.Lstat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err != nil {
		if m.Perms.Shared && m.Perms.Write {
			return unix.O_RDWR
		}
		return unix.O_RDONLY
	}
	if fi.Mode().Perm()&0o200 != 0 {
		return unix.O_RDWR
	}
	return unix.O_RDONLY
}

// DumpFds records the fd table of pid and returns its fdinfo entries. An
// fd of a kind cryo cannot restore fails the dump, naming the fd, its kind
// and its link.
func (d *Dumper) DumpFds(pid int) ([]*fdinfo.FdinfoEntry, error) {
	d.locks.pids[pid] = true
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("fds of %d: %w", pid, err)
	}
	nums := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	// One pidfd for every copy of this process's fds (readOwner takes
	// one of each).
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	var out []*fdinfo.FdinfoEntry
	for _, n := range nums {
		e, err := d.dumpFd(pid, n, dir+"/"+strconv.Itoa(n), pfd)
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, e)
		}
	}
	return out, nil
}

func (d *Dumper) dumpFd(pid, n int, path string, pidfd int) (*fdinfo.FdinfoEntry, error) {
	link, err := os.Readlink(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // the process is frozen: it cannot have closed it, but its table can be shared
		}
		return nil, fmt.Errorf("fd %d of %d: %w", n, pid, err)
	}
	info, err := procfs.FdinfoPid(pid, n)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%s) of %d: %w", n, link, pid, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("fd %d (%s) of %d: %w", n, link, pid, err)
	}
	fdFlags := uint32(0)
	if info.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	fd := &Fd{Pid: pid, Num: n, Path: path, Link: link, Info: info, Stat: &st, Flags: info.Flags &^ unix.O_CLOEXEC, cp: -1, pidfd: pidfd}
	defer fd.close()
	// An open file description shared by two fds (dup, inherited across
	// fork, passed over a socket) must stay one, in this process and
	// across the tree.
	id := d.sharedWith(fd)
	if id == 0 {
		var k dumper
		for _, c := range d.kinds {
			if c.match(fd) {
				k = c
				break
			}
		}
		if k == nil {
			return nil, fmt.Errorf("fd %d (%s, %s) of pid %d: %w", n, unknownKind(fd), link, pid, errs.ErrNotSupported)
		}
		own, err := readOwner(fd)
		if err != nil {
			return nil, fmt.Errorf("fd %d (%s) of pid %d: %w", n, link, pid, err)
		}
		if id, err = k.dump(d, fd); err != nil {
			return nil, fmt.Errorf("fd %d (%s) of pid %d: %w", n, link, pid, err)
		}
		if err := d.setOwner(fd, id, own); err != nil {
			return nil, fmt.Errorf("fd %d (%s) of pid %d: %w", n, link, pid, err)
		}
	}
	if err := d.noteLocks(fd, id); err != nil {
		return nil, fmt.Errorf("fd %d (%s) of pid %d: %w", n, link, pid, err)
	}
	key := fileIno{st.Dev, st.Ino}
	d.opened[key] = append(d.opened[key], openFd{pid: pid, fd: n, id: id})
	return &fdinfo.FdinfoEntry{
		Id:    proto.Uint32(id),
		Flags: proto.Uint32(fdFlags),
		Type:  d.Entry(id).GetType().Enum(),
		Fd:    proto.Uint32(uint32(n)),
	}, nil
}

// leaseHolder is the process that holds a lease through fd, or 0.
func leaseHolder(fd *Fd) int {
	for _, lk := range fd.Info.Locks {
		if lk.Kind == procfs.LockLease && !lk.Blocked {
			return lk.Pid
		}
	}
	return 0
}

func isUnixSocket(fd *Fd) bool {
	if fd.Stat.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false
	}
	a, ok := fd.socket()
	return ok && a.family == unix.AF_UNIX
}

// sharedWith returns the id of an fd already seen that shares its open
// file description with fd (kcmp KCMP_FILE), or 0.
func (d *Dumper) sharedWith(fd *Fd) uint32 {
	for _, o := range d.opened[fileIno{fd.Stat.Dev, fd.Stat.Ino}] {
		if r, err := kabi.Kcmp(o.pid, fd.Pid, kabi.KCMP_FILE, uintptr(o.fd), uintptr(fd.Num)); err == nil && r == 0 {
			return o.id
		}
	}
	return 0
}

// unknownKind names an fd no kind matched, for the refusal.
func unknownKind(fd *Fd) string {
	if fd.Stat.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return socketKind(fd) + " socket"
	}
	typ := strings.SplitN(strings.TrimPrefix(fd.Link, "anon_inode:"), ":", 2)[0]
	if fd.Stat.Mode&unix.S_IFMT != unix.S_IFREG && !strings.HasPrefix(fd.Link, "anon_inode:") && !strings.Contains(fd.Link, ":[") {
		typ = fmt.Sprintf("mode %#o", fd.Stat.Mode&unix.S_IFMT)
	}
	return typ
}

// Check refuses, once every process of the tree is dumped, what restore
// could not rebuild: each kind checks its own (a pipe end outside the
// tree, a socket's peer), then the file locks (a lock no fd shows).
func (d *Dumper) Check() error {
	for _, k := range d.kinds {
		if c, ok := k.(checker); ok {
			if err := c.check(d); err != nil {
				return err
			}
		}
	}
	if err := d.checkOwners(); err != nil {
		return err
	}
	return d.checkLocks()
}

// Side is where kinds write what they keep beside files.img.
type Side struct {
	Dir *image.Dir
	// Shmem writes the contents of a shared memory object (a memfd) of
	// size bytes read from src, as pagemap-shmem-SHMID.img and its pages
	// file: the dump's memory writer does it, as for shared anonymous
	// memory.
	Shmem func(shmid uint32, src *os.File, size int64) error
}

// Write writes files.img, the ghost files and every kind's side data.
func (d *Dumper) Write(s *Side) error {
	msgs := make([]proto.Message, len(d.entries))
	for i, e := range d.entries {
		msgs[i] = e
	}
	if err := imageset.Write(s.Dir, imageset.Files, msgs...); err != nil {
		return err
	}
	if err := d.writeGhosts(s.Dir); err != nil {
		return err
	}
	if d.opts.FileLocks {
		// Written even without a lock: criu restore --file-locks wants it.
		locks := d.lockEntries()
		msgs := make([]proto.Message, len(locks))
		for i, e := range locks {
			msgs[i] = e
		}
		if err := imageset.Write(s.Dir, imageset.FileLocks, msgs...); err != nil {
			return err
		}
	}
	for _, k := range d.kinds {
		if w, ok := k.(sideWriter); ok {
			if err := w.writeSide(d, s); err != nil {
				return err
			}
		}
	}
	return nil
}

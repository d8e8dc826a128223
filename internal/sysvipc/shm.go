package sysvipc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/nsenter"
	"github.com/cryo-project/cryo/internal/procfs"
)

// NsID is the IPC namespace id cryo's images name for the objects of the
// dumper's namespace (Namespace gives another).
const NsID = 1

const pageSize = 4096

// maxSegment bounds a segment read from an image (kernel.shmmax's default
// is larger, but no image of this machine's memory holds more).
const maxSegment = 1 << 40

// IsShm says whether mapping m is a System V shared memory attachment.
func IsShm(m procfs.Mapping) bool { return strings.HasPrefix(m.Path, "/SYSV") }

// attach is one mapping of a segment by a process of the tree.
type attach struct {
	pid        int
	start, end uint64
}

// Dumper collects the tree's attachments while the processes are read,
// checks them against /proc/sysvipc/shm and writes the segments.
type Dumper struct {
	// nsID names the images; nsPid is a frozen process of the tree in
	// an IPC namespace of the tree's own (0: cryo's), all of whose
	// objects are the tree's.
	nsID  uint32
	nsPid int
	byID  map[int32][]attach
	segs  []procfs.ShmSegment // those of byID, after Check
	sems  []*semSet           // the tree's, after CheckSemMsg
	msgs  []*msgQueue         // the tree's, after CheckSemMsg
}

// NewDumper returns a Dumper with nothing attached.
func NewDumper() *Dumper { return &Dumper{nsID: NsID, byID: map[int32][]attach{}} }

// Namespace makes d dump IPC namespace id, that of process pid, which is
// the tree's own: every segment, set and queue in it is the tree's, and
// the dump reads them from a thread inside it.
func (d *Dumper) Namespace(id uint32, pid int) { d.nsID, d.nsPid = id, pid }

// id is the namespace id the images name (NsID for a Dumper made as a
// literal).
func (d *Dumper) id() uint32 {
	if d.nsID == 0 {
		return NsID
	}
	return d.nsID
}

// in runs fn in the dumped namespace.
func (d *Dumper) in(fn func() error) error {
	if d.nsPid == 0 {
		return fn()
	}
	return nsenter.Run(d.nsPid, "ipc", fn)
}

// Add records mapping m of pid, a System V attachment (IsShm), and returns
// the segment's id for the VMA's shmid.
func (d *Dumper) Add(pid int, m procfs.Mapping) (uint64, error) {
	if m.Inode > 1<<31-1 {
		return 0, fmt.Errorf("mapping %#x-%#x of pid %d: System V shared memory with id %d: %w", m.Start, m.End, pid, m.Inode, image.ErrImageCorrupt)
	}
	id := int32(m.Inode)
	d.byID[id] = append(d.byID[id], attach{pid: pid, start: m.Start, end: m.End})
	return uint64(id), nil
}

func name(s procfs.ShmSegment) string {
	return fmt.Sprintf("System V shared memory segment (key %#x, id %d)", uint32(s.Key), s.ID)
}

// Check reads the namespace's segments and refuses what cannot be
// restored exactly (see the package doc).
func (d *Dumper) Check() error { return d.in(d.check) }

func (d *Dumper) check() error {
	if len(d.byID) == 0 && d.nsPid == 0 {
		return nil
	}
	all, err := procfs.SysvShm()
	if err != nil {
		return fmt.Errorf("list System V shared memory: %w", err)
	}
	byID := map[int32]procfs.ShmSegment{}
	for _, s := range all {
		byID[s.ID] = s
	}
	ids := make([]int32, 0, len(d.byID))
	for id := range d.byID {
		ids = append(ids, id)
	}
	if d.nsPid != 0 {
		// Every segment of the namespace is the tree's, attached or not.
		for _, s := range all {
			if _, ok := d.byID[s.ID]; !ok {
				ids = append(ids, s.ID)
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	d.segs = d.segs[:0]
	for _, id := range ids {
		s, ok := byID[id]
		if !ok {
			return fmt.Errorf("pid %d maps System V shared memory id %d, which /proc/sysvipc/shm does not list (another IPC namespace?): %w", d.byID[id][0].pid, id, errs.ErrNotSupported)
		}
		at := d.byID[id]
		if s.Nattch != uint64(len(at)) {
			return fmt.Errorf("%s: attached %d times, %d of them by the tree; a process outside the tree shares it, and a restored copy would not be shared with it: %w", name(s), s.Nattch, len(at), errs.ErrNotSupported)
		}
		want := (s.Size + pageSize - 1) &^ (pageSize - 1)
		for _, a := range at {
			if a.end-a.start != want {
				return fmt.Errorf("%s: pid %d maps %#x-%#x, not the whole segment of %d bytes (part unmapped, or the mapping split): %w", name(s), a.pid, a.start, a.end, s.Size, errs.ErrNotSupported)
			}
		}
		if s.Mode&procfs.ShmLocked != 0 {
			return fmt.Errorf("%s: locked in memory (SHM_LOCK): %w", name(s), errs.ErrNotSupported)
		}
		if s.Size > maxSegment {
			return fmt.Errorf("%s: %d bytes: %w", name(s), s.Size, errs.ErrNotSupported)
		}
		d.segs = append(d.segs, s)
	}
	return nil
}

// Write writes the tree's segments, semaphore sets and message queues.
func (d *Dumper) Write(dir *image.Dir) error {
	if err := d.writeShm(dir); err != nil {
		return err
	}
	if err := d.writeSems(dir); err != nil {
		return err
	}
	return d.writeMsgs(dir)
}

// writeShm writes ipcns-shm-1.img: each segment and its contents, read
// through map_files of a process that maps it.
func (d *Dumper) writeShm(dir *image.Dir) error {
	if len(d.segs) == 0 {
		return nil
	}
	f := imageset.IpcShm(d.id())
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer w.Close()
	buf := make([]byte, 1<<20)
	for _, s := range d.segs {
		e := &ipc_shm.IpcShmEntry{
			Desc: &ipc_desc.IpcDescEntry{
				Key: proto.Uint32(uint32(s.Key)), Uid: proto.Uint32(s.UID), Gid: proto.Uint32(s.GID),
				Cuid: proto.Uint32(s.CUID), Cgid: proto.Uint32(s.CGID), Mode: proto.Uint32(s.Mode), Id: proto.Uint32(uint32(s.ID)),
			},
			Size:       proto.Uint64(s.Size),
			InPagemaps: proto.Bool(false),
		}
		if err := w.Write(e); err != nil {
			return err
		}
		if len(d.byID[s.ID]) == 0 {
			// Attached by no one: cryo attaches it, read-only, inside
			// the namespace.
			if err := d.in(func() error { return writeDetached(w, s, buf) }); err != nil {
				return err
			}
			continue
		}
		a := d.byID[s.ID][0]
		src, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", a.pid, a.start, a.end))
		if err != nil {
			return fmt.Errorf("open %s through pid %d: %w", name(s), a.pid, err)
		}
		total := (s.Size + 3) &^ 3
		for off := uint64(0); off < total; {
			n := min(uint64(len(buf)), total-off)
			b := buf[:n]
			k, err := src.ReadAt(b, int64(off))
			if err != nil && !errors.Is(err, io.EOF) {
				src.Close()
				return fmt.Errorf("read %s: %w", name(s), err)
			}
			clear(b[k:]) // the padding past the end
			if err := w.WriteRaw(b); err != nil {
				src.Close()
				return err
			}
			off += n
		}
		src.Close()
	}
	return w.Close()
}

// writeDetached writes the contents of segment s, which no process
// attaches, as writeShm does.
func writeDetached(w *image.Writer, s procfs.ShmSegment, buf []byte) error {
	mem, err := unix.SysvShmAttach(int(s.ID), 0, unix.SHM_RDONLY)
	if err != nil {
		return fmt.Errorf("shmat %s: %w", name(s), err)
	}
	defer unix.SysvShmDetach(mem)
	total := (s.Size + 3) &^ 3
	for off := uint64(0); off < total; {
		n := min(uint64(len(buf)), total-off)
		b := buf[:n]
		k := copy(b, mem[min(off, uint64(len(mem))):])
		clear(b[k:])
		if err := w.WriteRaw(b); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// Remove removes the dumped segments, sets and queues, once the dump has
// killed the tree that was their only user seen (Check, CheckSemMsg): the
// image holds them now. Those of a namespace of the tree's own went with
// its last process.
func (d *Dumper) Remove() error {
	if d.nsPid != 0 {
		return nil
	}
	var first error
	for _, s := range d.segs {
		if s.Mode&procfs.ShmDest != 0 {
			continue // removed already: it goes with its last attachment
		}
		if _, err := unix.SysvShmCtl(int(s.ID), unix.IPC_RMID, nil); err != nil && first == nil {
			first = fmt.Errorf("remove %s after the dump: %w", name(s), err)
		}
	}
	for _, s := range d.sems {
		if err := kabi.SemRemove(int(s.id)); err != nil && first == nil {
			first = fmt.Errorf("remove %s after the dump: %w", s.name(), err)
		}
	}
	for _, q := range d.msgs {
		if err := kabi.MsgRemove(int(q.id)); err != nil && first == nil {
			first = fmt.Errorf("remove %s after the dump: %w", q.name(), err)
		}
	}
	return first
}

// Segment is a segment of the image, as the restore needs it.
type Segment struct {
	entry *ipc_shm.IpcShmEntry
	off   int64 // of the contents in the image file
	made  bool  // created by this restore
}

// Restorer makes the image's segments, semaphore sets and queues again.
type Restorer struct {
	// nsID names the images; ns is the IPC namespace to make them in
	// (nil: cryo's).
	nsID uint32
	ns   *os.File
	dir  *image.Dir
	segs map[uint32]*Segment
	list []*Segment
	sems []*semRestore
	msgs []*msgRestore
}

// Load reads the image's segments, sets and queues (none if it has no
// ipcns files). semPids and msgPids are the last users cryo-meta.json
// records (meta.Meta.SemPids, MsgPids; nil in an image of another tool).
func Load(dir *image.Dir, semPids map[int32][]int32, msgPids map[int32][2]int32) (*Restorer, error) {
	return LoadNamespace(dir, NsID, semPids, msgPids)
}

// LoadNamespace is Load for the objects of IPC namespace nsID.
func LoadNamespace(dir *image.Dir, nsID uint32, semPids map[int32][]int32, msgPids map[int32][2]int32) (*Restorer, error) {
	r := &Restorer{nsID: nsID, dir: dir, segs: map[uint32]*Segment{}}
	if err := r.loadSems(semPids); err != nil {
		return nil, err
	}
	if err := r.loadMsgs(msgPids); err != nil {
		return nil, err
	}
	f := imageset.IpcShm(r.nsID)
	if !dir.Has(f.Name) {
		return r, nil
	}
	rd, err := dir.Open(f.Name, f.Magic)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for rd.Remaining() > 0 {
		e := &ipc_shm.IpcShmEntry{}
		at := rd.Offset()
		if err := rd.Next(e); err != nil {
			return nil, err
		}
		size := e.GetSize()
		id := e.GetDesc().GetId()
		bad := func(format string, args ...any) error {
			return &image.FormatError{File: f.Name, Offset: at, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
		}
		switch {
		case e.GetDesc() == nil:
			return nil, bad("segment without ipc_desc_entry")
		case e.GetInPagemaps() || e.GetHugetlbFlag() != 0:
			return nil, fmt.Errorf("%s: segment id %d with its pages in pagemaps or of huge pages: %w", f.Name, id, errs.ErrNotSupported)
		case size == 0 || size > maxSegment:
			return nil, bad("segment id %d of %d bytes", id, size)
		case id > 1<<31-1:
			return nil, bad("segment id %d", id)
		case r.segs[id] != nil:
			return nil, bad("segment id %d twice", id)
		}
		s := &Segment{entry: e, off: rd.Offset()}
		if _, err := rd.Raw(int64((size + 3) &^ 3)); err != nil {
			return nil, err
		}
		r.segs[id] = s
		r.list = append(r.list, s)
	}
	return r, nil
}

// Has says whether the image holds segment id.
func (r *Restorer) Has(id uint64) bool { return id <= 1<<31-1 && r.segs[uint32(id)] != nil }

// Size is the size of segment id, which Has.
func (r *Restorer) Size(id uint64) uint64 { return r.segs[uint32(id)].entry.GetSize() }

func segName(e *ipc_shm.IpcShmEntry) string {
	return fmt.Sprintf("System V shared memory segment (key %#x, id %d)", e.GetDesc().GetKey(), e.GetDesc().GetId())
}

// Namespace makes r make the objects in the IPC namespace open as ns (a
// new one, of the tree's own), until Close.
func (r *Restorer) Namespace(ns *os.File) { r.ns = ns }

// Close lets go of the namespace (Namespace).
func (r *Restorer) Close() {
	if r.ns != nil {
		r.ns.Close()
		r.ns = nil
	}
}

// Empty says whether the image has no segment, set or queue.
func (r *Restorer) Empty() bool { return len(r.list)+len(r.sems)+len(r.msgs) == 0 }

// Check refuses, before anything is made, a segment, set or queue whose
// key or id is taken in cryo's IPC namespace.
func (r *Restorer) Check() error {
	if err := r.checkSems(); err != nil {
		return err
	}
	if err := r.checkMsgs(); err != nil {
		return err
	}
	if len(r.list) == 0 {
		return nil
	}
	all, err := procfs.SysvShm()
	if err != nil {
		return fmt.Errorf("list System V shared memory: %w", err)
	}
	for _, s := range r.list {
		d := s.entry.GetDesc()
		if err := taken(segName(s.entry), d.GetId(), d.GetKey(), "segment", all, func(o procfs.ShmSegment) (int32, int32) { return o.ID, o.Key }); err != nil {
			return err
		}
	}
	return nil
}

// taken refuses an object to restore (name, with id and key) whose id or
// key an object of the same kind the namespace lists already has.
func taken[T any](name string, id, key uint32, kind string, live []T, idKey func(T) (id, key int32)) error {
	for _, o := range live {
		oid, okey := idKey(o)
		if uint32(oid) == id {
			return fmt.Errorf("%s: the id is taken by %s key %#x: %w", name, kind, uint32(okey), unix.EEXIST)
		}
		if key != 0 && uint32(okey) == key {
			return fmt.Errorf("%s: the key is taken by %s id %d: %w", name, kind, oid, unix.EEXIST)
		}
	}
	return nil
}

// Create makes every segment with its key, id, owner, mode and contents,
// and every set and queue with its key, id, owner and mode (Last fills
// them). On error, what it made is removed again (Cleanup).
func (r *Restorer) Create() error { return in(r.ns, r.createAll) }

func (r *Restorer) createAll() error {
	for _, s := range r.sems {
		if err := s.create(r.ns); err != nil {
			r.Cleanup()
			return fmt.Errorf("restore %s: %w", s.name(), err)
		}
	}
	for _, q := range r.msgs {
		if err := q.create(r.ns); err != nil {
			r.Cleanup()
			return fmt.Errorf("restore %s: %w", q.name(), err)
		}
	}
	if len(r.list) == 0 {
		return nil
	}
	f := imageset.IpcShm(r.nsID)
	rd, err := r.dir.Open(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer rd.Close()
	for _, s := range r.list {
		if err := rd.Next(&ipc_shm.IpcShmEntry{}); err != nil {
			return err
		}
		src, err := rd.Raw(int64((s.entry.GetSize() + 3) &^ 3))
		if err != nil {
			return err
		}
		if err := r.create(s, src); err != nil {
			r.Cleanup()
			return fmt.Errorf("restore %s: %w", segName(s.entry), err)
		}
	}
	return nil
}

// create makes segment s on a thread of its own, which takes the
// creator's uid and gid for the shmget (the kernel sets cuid and cgid from
// the caller's) and is then let die, never to run Go code again.
func (r *Restorer) create(s *Segment, src io.ReaderAt) error {
	return onThread(r.ns, func() error { return r.createOn(s, src) })
}

func (r *Restorer) createOn(s *Segment, src io.ReaderAt) error {
	d := s.entry.GetDesc()
	want := int(d.GetId())
	if err := os.WriteFile("/proc/sys/kernel/shm_next_id", []byte(strconv.Itoa(want)), 0); err != nil {
		return fmt.Errorf("choose the id (kernel.shm_next_id needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN): %w", err)
	}
	if d.GetCuid() != uint32(os.Geteuid()) || d.GetCgid() != uint32(os.Getegid()) {
		if err := kabi.SetThreadCreds(d.GetCuid(), d.GetCgid()); err != nil {
			return fmt.Errorf("take creator uid %d gid %d: %w", d.GetCuid(), d.GetCgid(), err)
		}
	}
	id, err := unix.SysvShmGet(int(int32(d.GetKey())), int(s.entry.GetSize()), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		return fmt.Errorf("shmget: %w", err)
	}
	s.made = true
	if id != want {
		_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		s.made = false
		return fmt.Errorf("the kernel gave id %d (another segment was made meanwhile): %w", id, unix.EEXIST)
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fmt.Errorf("shmat: %w", err)
	}
	_, rerr := src.ReadAt(mem[:s.entry.GetSize()], 0)
	if derr := unix.SysvShmDetach(mem); rerr == nil {
		rerr = derr
	}
	if rerr != nil {
		return fmt.Errorf("contents: %w", rerr)
	}
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = d.GetUid(), d.GetGid(), d.GetMode()&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &ds); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

// ShmatFlags are the shmat flags that attach segment id again as VMA
// prot/mayWrite had it, and the protection shmat gives it.
func ShmatFlags(prot uint32, mayWrite bool) (flags, got uint64) {
	got = unix.PROT_READ
	if mayWrite {
		got |= unix.PROT_WRITE
	} else {
		flags |= unix.SHM_RDONLY
	}
	if prot&unix.PROT_EXEC != 0 {
		flags |= shmExec
		got |= unix.PROT_EXEC
	}
	return flags, got
}

// Removed marks removed (IPC_RMID) the segments that were before the
// dump, once every process has attached them: each lives on while attached.
func (r *Restorer) Removed() error { return in(r.ns, r.removed) }

func (r *Restorer) removed() error {
	for _, s := range r.list {
		if s.entry.GetDesc().GetMode()&procfs.ShmDest == 0 {
			continue
		}
		if _, err := unix.SysvShmCtl(int(s.entry.GetDesc().GetId()), unix.IPC_RMID, nil); err != nil {
			return fmt.Errorf("remove %s: %w", segName(s.entry), err)
		}
		s.made = false // the kernel frees it with its last attachment
	}
	return nil
}

// Last gives every set its values and every queue its messages, once the
// tree's processes exist: as runs the operations the kernel records the
// pid of (the last semop of each semaphore, a queue's last send and
// receive) as the process that did them.
func (r *Restorer) Last(as As) error {
	for _, s := range r.sems {
		if err := s.last(as, r.ns); err != nil {
			return fmt.Errorf("restore %s: %w", s.name(), err)
		}
	}
	for _, q := range r.msgs {
		if err := q.last(as, r.ns); err != nil {
			return fmt.Errorf("restore %s: %w", q.name(), err)
		}
	}
	return nil
}

// Cleanup removes the segments, sets and queues this restore made (a
// failed restore).
func (r *Restorer) Cleanup() {
	_ = in(r.ns, func() error {
		r.cleanup()
		return nil
	})
}

func (r *Restorer) cleanup() {
	for _, s := range r.sems {
		s.remove()
	}
	for _, q := range r.msgs {
		q.remove()
	}
	for _, s := range r.list {
		if s.made {
			_, _ = unix.SysvShmCtl(int(s.entry.GetDesc().GetId()), unix.IPC_RMID, nil)
			s.made = false
		}
	}
}

// shmExec is SHM_EXEC (include/uapi/linux/shm.h), which x/sys lacks.
const shmExec = 0o100000

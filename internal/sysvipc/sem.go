package sysvipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// maxSems bounds a set read from an image (kernel.sem's SEMMSL is at most
// 32000).
const maxSems = 32000

// semSet is a semaphore set of the tree's, as dumped.
type semSet struct {
	id     int32
	ds     kabi.SemidDs
	values []uint16
	pids   []int32 // semctl GETPID of each semaphore
}

func semName(key, id uint32) string {
	return fmt.Sprintf("System V semaphore set (key %#x, id %d)", key, id)
}

func (s *semSet) name() string { return semName(uint32(s.ds.Perm.Key), uint32(s.id)) }

// checkSems reads the namespace's semaphore sets, keeps the tree's and
// refuses one another process also uses.
func (d *Dumper) checkSems(o *owners) error {
	all, err := procfs.SysvSem()
	if err != nil {
		return fmt.Errorf("list System V semaphores: %w", err)
	}
	d.sems = d.sems[:0]
next:
	for _, s := range all {
		id := int(s.ID)
		pids := make([]int32, s.Nsems)
		ours := o.all || o.waiter(s.ID, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP) != 0
		for n := range pids {
			pid, err := kabi.SemGetPid(id, n)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
				continue next // removed meanwhile
			}
			if err != nil {
				return fmt.Errorf("semctl(GETPID) of semaphore %d of %s: %w", n, semName(uint32(s.Key), uint32(s.ID)), err)
			}
			pids[n] = int32(pid)
			ours = ours || o.inTree(int32(pid))
		}
		if !ours {
			continue
		}
		set := &semSet{id: s.ID, pids: pids}
		if set.ds, err = kabi.SemStat(id); err != nil {
			return fmt.Errorf("semctl(IPC_STAT) of %s: %w", set.name(), err)
		}
		for n, pid := range pids {
			if o.outsider(pid) {
				return fmt.Errorf("%s: pid %d, not of the tree, did the last operation on semaphore %d; a restored copy would not be shared with it: %w", set.name(), pid, n, errs.ErrNotSupported)
			}
			// The tree's own waiters left their semop when frozen (it
			// fails with EINTR on any stop): who still waits is not
			// the tree's.
			for _, c := range []struct {
				cmd  int
				what string
			}{{kabi.SemGETNCNT, "for it to grow"}, {kabi.SemGETZCNT, "for it to be zero"}} {
				w, err := kabi.SemCtl(id, n, c.cmd, 0)
				if err != nil {
					return fmt.Errorf("semctl of semaphore %d of %s: %w", n, set.name(), err)
				}
				if w > 0 {
					return fmt.Errorf("%s: semaphore %d is waited on %s by %d task(s) outside the tree; a restored copy would not be shared with them: %w", set.name(), n, c.what, w, errs.ErrNotSupported)
				}
			}
		}
		if set.values, err = kabi.SemGetAll(id, len(pids)); err != nil {
			return fmt.Errorf("semctl(GETALL) of %s: %w", set.name(), err)
		}
		d.sems = append(d.sems, set)
	}
	return nil
}

func desc(p unix.SysvIpcPerm, id int32) *ipc_desc.IpcDescEntry {
	return &ipc_desc.IpcDescEntry{
		Key: proto.Uint32(uint32(p.Key)), Uid: proto.Uint32(p.Uid), Gid: proto.Uint32(p.Gid),
		Cuid: proto.Uint32(p.Cuid), Cgid: proto.Uint32(p.Cgid), Mode: proto.Uint32(p.Mode), Id: proto.Uint32(uint32(id)),
	}
}

// writeSems writes ipcns-sem-1.img: each set's entry, then its values as
// u16 padded to 8 bytes, CRIU's layout.
func (d *Dumper) writeSems(dir *image.Dir) error {
	if len(d.sems) == 0 {
		return nil
	}
	f := imageset.IpcSem(d.id())
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer w.Close()
	for _, s := range d.sems {
		if err := w.Write(&ipc_sem.IpcSemEntry{Desc: desc(s.ds.Perm, s.id), Nsems: proto.Uint32(uint32(len(s.values)))}); err != nil {
			return err
		}
		b := make([]byte, (2*len(s.values)+7)&^7)
		for i, v := range s.values {
			binary.NativeEndian.PutUint16(b[2*i:], v)
		}
		if err := w.WriteRaw(b); err != nil {
			return err
		}
	}
	return w.Close()
}

// SemPids are the pids of the last operations on the dumped sets'
// semaphores, by set id, for meta.Meta.SemPids.
func (d *Dumper) SemPids() map[int32][]int32 {
	if len(d.sems) == 0 {
		return nil
	}
	m := map[int32][]int32{}
	for _, s := range d.sems {
		m[s.id] = s.pids
	}
	return m
}

// semRestore is a set of the image.
type semRestore struct {
	entry  *ipc_sem.IpcSemEntry
	values []uint16
	pids   []int32
	made   bool
}

func (s *semRestore) name() string {
	return semName(s.entry.GetDesc().GetKey(), s.entry.GetDesc().GetId())
}

func (r *Restorer) loadSems(pids map[int32][]int32) error {
	f := imageset.IpcSem(r.nsID)
	if !r.dir.Has(f.Name) {
		return nil
	}
	rd, err := r.dir.Open(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer rd.Close()
	seen := map[uint32]bool{}
	for rd.Remaining() > 0 {
		e := &ipc_sem.IpcSemEntry{}
		at := rd.Offset()
		if err := rd.Next(e); err != nil {
			return err
		}
		n, id := e.GetNsems(), e.GetDesc().GetId()
		bad := func(format string, args ...any) error {
			return &image.FormatError{File: f.Name, Offset: at, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
		}
		switch {
		case e.GetDesc() == nil:
			return bad("semaphore set without ipc_desc_entry")
		case n == 0 || n > maxSems:
			return bad("semaphore set id %d of %d semaphores", id, n)
		case id > 1<<31-1 || seen[id]:
			return bad("semaphore set id %d (twice?)", id)
		}
		seen[id] = true
		b, err := rd.Raw(int64((2*n + 7) &^ 7))
		if err != nil {
			return err
		}
		raw := make([]byte, 2*n)
		if _, err := b.ReadAt(raw, 0); err != nil {
			return err
		}
		s := &semRestore{entry: e, values: make([]uint16, n), pids: pids[int32(id)]}
		for i := range s.values {
			if s.values[i] = binary.NativeEndian.Uint16(raw[2*i:]); s.values[i] > kabi.SEMVMX {
				return bad("semaphore %d of set id %d has value %d", i, id, s.values[i])
			}
		}
		if s.pids != nil && len(s.pids) != int(n) {
			return fmt.Errorf("%s: %s: %d pids of last operations for %d semaphores: %w", f.Name, s.name(), len(s.pids), n, image.ErrImageCorrupt)
		}
		r.sems = append(r.sems, s)
	}
	return nil
}

func (r *Restorer) checkSems() error {
	if len(r.sems) == 0 {
		return nil
	}
	all, err := procfs.SysvSem()
	if err != nil {
		return fmt.Errorf("list System V semaphores: %w", err)
	}
	for _, s := range r.sems {
		d := s.entry.GetDesc()
		if err := taken(s.name(), d.GetId(), d.GetKey(), "semaphore set", all, func(o procfs.SemSet) (int32, int32) { return o.ID, o.Key }); err != nil {
			return err
		}
	}
	return nil
}

// create makes set s with its key, id, creator, owner and mode; its
// values are set by last.
func (s *semRestore) create(ns *os.File) error {
	d := s.entry.GetDesc()
	want := int(d.GetId())
	if err := nextID("sem", d.GetId()); err != nil {
		return err
	}
	if err := asCreator(ns, d.GetCuid(), d.GetCgid(), func() error {
		id, err := kabi.SemGet(int32(d.GetKey()), int(s.entry.GetNsems()), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if err != nil {
			return fmt.Errorf("semget: %w", err)
		}
		s.made = true
		if id != want {
			_ = kabi.SemRemove(id)
			s.made = false
			return fmt.Errorf("the kernel gave id %d (another set was made meanwhile): %w", id, unix.EEXIST)
		}
		return nil
	}); err != nil {
		return err
	}
	ds, err := kabi.SemStat(want)
	if err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = d.GetUid(), d.GetGid(), d.GetMode()&0o777
	if err := kabi.SemSetPerm(want, &ds); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

// last sets every value, each by the process of the tree that did the
// last operation on it (SETVAL records its pid as GETPID's); cryo sets
// those last changed by a process outside the tree, which is gone.
func (s *semRestore) last(as As, ns *os.File) error {
	id := uint64(s.entry.GetDesc().GetId())
	for n, v := range s.values {
		pid := int32(0)
		if s.pids != nil {
			pid = s.pids[n]
		}
		if pid == 0 && v == 0 {
			continue // as semget made it: never operated on
		}
		if pid > 0 {
			done, err := as(int(pid), "semctl(SETVAL)", unix.SYS_SEMCTL, nil, 0, id, uint64(n), kabi.SemSETVAL, uint64(v))
			if err != nil {
				return fmt.Errorf("semaphore %d as pid %d: %w", n, pid, err)
			}
			if done {
				continue
			}
		}
		if err := in(ns, func() error {
			_, err := kabi.SemCtl(int(id), n, kabi.SemSETVAL, uintptr(v))
			return err
		}); err != nil {
			return fmt.Errorf("semaphore %d: SETVAL: %w", n, err)
		}
	}
	return nil
}

func (s *semRestore) remove() {
	if s.made {
		_ = kabi.SemRemove(int(s.entry.GetDesc().GetId()))
		s.made = false
	}
}

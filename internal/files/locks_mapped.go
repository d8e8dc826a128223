package files

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/procfs"
)

// flock locks that only a mapping holds. A JVM opens its perf data file
// (/tmp/hsperfdata_USER/PID), takes an exclusive flock on it, maps it
// shared and closes the fd: the mapping's file, the very open file
// description, keeps the lock, and no fd shows it. A restore that opened
// the file anew to map it would bring the mapping back without the lock,
// and another JVM would take the file for a dead one's.
//
// The dump can tell such a lock apart only by elimination (no interface
// names the open file description of a mapping): a flock (it belongs to a
// description) that /proc/locks shows for a process of the tree, on a file
// that one mapping of the whole tree maps, in that process, while no fd
// of the tree is open on the file and no fd outside the tree shows the
// lock. Any doubt (two mappings, an fd on the file) is refused.
//
// In file-locks.img such a lock is an FL_FLOCK entry whose fd is
// negative: -1 - the file id of the mapping's file (CRIU's restore, which
// takes each lock through its fd, fails on it rather than restore it
// without the lock). Restore takes it on the fd it opens to map the file
// (TakeMappingLocks), before closing it, and reads it back from
// /proc/locks at the end with the others.

// mappedFile is one mapping of a regular file, for the locks.
type mappedFile struct {
	pid        int
	start, end uint64
	id         uint32 // the mapping's file id
	path       string
}

// mapLock is a flock held by a mapping's file.
type mapLock struct {
	lk procfs.Lock
	m  mappedFile
}

// noteMapped records that pid maps the file of id at m.
func (ld *lockDump) noteMapped(pid int, m procfs.Mapping, id uint32) {
	if ld.maps == nil {
		ld.maps = map[lockFile][]mappedFile{}
	}
	k := lockFile{m.Dev, m.Inode}
	ld.maps[k] = append(ld.maps[k], mappedFile{pid: pid, start: m.Start, end: m.End, id: id, path: m.RawPath})
}

// byMapping says whether lk, a lock of a process of the tree that no fd
// of the tree shows, is held by the file of a mapping (see the top of this
// file), and which; or why it cannot tell.
func (d *Dumper) byMapping(lk *procfs.Lock) (mappedFile, string) {
	if lk.Kind != procfs.LockFlock {
		return mappedFile{}, "not a flock"
	}
	k := lockFile{lk.Dev, lk.Ino}
	maps := d.locks.maps[k]
	switch {
	case len(maps) == 0:
		return mappedFile{}, "no mapping of the tree maps the file"
	case len(maps) > 1:
		return mappedFile{}, fmt.Sprintf("%d mappings of the tree map the file, and none tells which holds it", len(maps))
	case maps[0].pid != lk.Pid:
		return mappedFile{}, fmt.Sprintf("the file's mapping is pid %d's", maps[0].pid)
	}
	if len(d.opened[fileIno{unix.Mkdev(lk.Dev.Major, lk.Dev.Minor), lk.Ino}]) > 0 {
		return mappedFile{}, "an fd of the tree is open on the file too"
	}
	if e := d.Entry(maps[0].id); e.GetReg() == nil || e.GetReg().GetName() == "" {
		return mappedFile{}, "the mapping's file is not a regular file of files.img"
	}
	if _, ghost := d.ghosts[maps[0].id]; ghost {
		return mappedFile{}, "the file is deleted"
	}
	return maps[0], ""
}

// keepMapped records lk as held by the mapping m, or refuses it without
// --file-locks.
func (d *Dumper) keepMapped(lk *procfs.Lock, m mappedFile) error {
	if !d.opts.FileLocks {
		return fmt.Errorf("mapping %#x-%#x (%s) of pid %d holds %s through its file; dump with --file-locks to checkpoint file locks: %w",
			m.start, m.end, m.path, m.pid, aLock(lk), errs.ErrNotSupported)
	}
	d.locks.viaMap = append(d.locks.viaMap, mapLock{lk: *lk, m: m})
	return nil
}

// mappedFd is the fd field of a file-locks.img entry for a lock held by
// the mapping of file id, and back.
func mappedFd(id uint32) int32 { return -1 - int32(id) }

func mappedID(fd int32) (uint32, bool) {
	if fd >= 0 {
		return 0, false
	}
	return uint32(-1 - fd), true
}

// TakeMappingLocks takes, in p, the locks that the mapping of file id
// held, through fd, which p opened to map it: the mapping keeps that open
// file description, and the lock with it, once fd is closed.
func (r *Restorer) TakeMappingLocks(p Proc, id uint32, fd uint64) error {
	for i := range r.locks {
		il := &r.locks[i]
		if !il.mapped || il.pid != p.Pid() || il.file != id {
			continue
		}
		nr, args, _ := lockCall(il)
		args[0] = fd
		if _, err := p.Call(fmt.Sprintf("take %s through the file of its mapping", il), nr, args...); err != nil {
			return fmt.Errorf("the mapping of %s in pid %d cannot take its %s again (held since the dump by a process outside the tree?): %w",
				r.set.Files[id].GetReg().GetName(), il.pid, il, err)
		}
		il.taken = true
	}
	return nil
}

// verifyMappedLocks reads back, from /proc/locks, the locks mappings hold:
// each must be there, for its pid and the mapped file.
func (r *Restorer) verifyMappedLocks() error {
	var all []procfs.Lock
	for i := range r.locks {
		il := &r.locks[i]
		if !il.mapped {
			continue
		}
		name := r.set.Files[il.file].GetReg().GetName()
		if !il.taken {
			return fmt.Errorf("pid %d did not map %s again, whose mapping held %s: %w", il.pid, name, il, errLockLost)
		}
		if all == nil {
			var err error
			if all, err = procfs.ReadLocks(); err != nil {
				return fmt.Errorf("read back the file locks: %w", err)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(name, &st); err != nil {
			return fmt.Errorf("read back %s of pid %d on %s: %w", il, il.pid, name, err)
		}
		found := false
		for j := range all {
			lk := &all[j]
			if !lk.Blocked && lk.Kind == il.lk.Kind && lk.Type == il.lk.Type && lk.Pid == il.pid && lk.Ino == st.Ino &&
				unix.Mkdev(lk.Dev.Major, lk.Dev.Minor) == st.Dev {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("pid %d does not hold %s on %s, through its mapping, after restore: %w", il.pid, il, name, errLockLost)
		}
	}
	return nil
}

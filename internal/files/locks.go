package files

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// File locks: flock(2), POSIX record locks (fcntl F_SETLK), OFD locks
// (F_OFD_SETLK) and leases (F_SETLEASE), in CRIU's file-locks.img, one
// file_lock_entry a lock: flag (FL_POSIX, FL_FLOCK, FL_OFD, FL_LEASE),
// type (F_RDLCK, F_WRLCK), the pid and fd to take it again through, and
// start and len as struct flock has them (len 0: to the end of the file).
//
// # Who owns a lock
//
// A POSIX lock belongs to its process (its fd table): fork does not pass
// it on, and closing any fd of the file, even one on another open file
// description, drops every POSIX lock the process has on it. flock locks,
// OFD locks and leases belong to the open file description: every fd and
// process sharing it (dup, fork, SCM_RIGHTS) holds them, and they go with
// the last reference to it.
//
// # Dump
//
// The kernel shows, in /proc/PID/fdinfo/FD, the locks held through the
// fd's open file description: those the description owns, and the POSIX
// locks of the fd's process that were taken through it. A dump reads them
// fd by fd (noteLocks): a POSIX lock is recorded once for its process, a
// lock of a description once for the description, to be taken again in
// the process that took it (the pid /proc/locks shows) through one of its
// fds on that description. Without Options.FileLocks the first lock found
// fails the dump, naming it. Once the tree is dumped, /proc/locks is read
// to find the tree's locks that no fd shows (checkLocks): a description
// kept only by a mapping still holds its locks, and restore would open the
// mapping anew, without them. A flock that a single mapping of the tree
// must be what holds is taken again on the file restore maps
// (locks_mapped.go); the others are refused.
//
// # Restore
//
// Locks are taken last (Restorer.TakeLocks), once every process of the
// tree has every fd and restore has closed every fd of its own in them:
// closing a temporary fd of a file (one opened to map it, as sqlite's -shm
// is) after its POSIX locks were taken would drop them without a word.
// Leases, flock and OFD locks come first, then the POSIX locks; each is
// taken without waiting, and one that conflicts with a lock taken since
// the dump (by a process outside the tree) fails the restore, naming the
// holder. Then every lock is read back from fdinfo: the restore succeeds
// only if each fd shows exactly the locks it showed at dump.

// lockDump is the locks of a dump.
type lockDump struct {
	// posix are the POSIX locks, each once: noted[pid, file id] is set
	// once an fd of pid on that description was read.
	posix []heldLock
	noted map[[2]uint64]bool
	// desc are the locks each open file description owns (flock, OFD,
	// leases), by file id, and the fds that hold the description.
	desc  map[uint32]*descLocks
	order []uint32
	// pids are the tree's processes; mapped the files they map, by the
	// device and inode /proc/locks names.
	pids   map[int]bool
	mapped map[lockFile]string
	// leases are the leases of /proc/locks by file, read at the first
	// mapping.
	leases map[lockFile]procfs.Lock
	// maps are the tree's mappings of regular files, by file; viaMap the
	// flocks only a mapping holds (locks_mapped.go).
	maps   map[lockFile][]mappedFile
	viaMap []mapLock
}

// heldLock is a lock as found, with the fd that showed it.
type heldLock struct {
	lk   procfs.Lock
	pid  int
	fd   int
	link string
}

type descLocks struct {
	locks   []procfs.Lock
	holders []heldLock // every fd on the description; lk unset
}

type lockFile struct {
	dev procfs.Dev
	ino uint64
}

func newLockDump() lockDump {
	return lockDump{noted: map[[2]uint64]bool{}, desc: map[uint32]*descLocks{}, pids: map[int]bool{}, mapped: map[lockFile]string{}}
}

// describeLock names a lock as a user knows it: "POSIX write lock on
// bytes 30-EOF", "exclusive flock", "OFD read lock on bytes 5-5", "read
// lease".
func describeLock(lk *procfs.Lock) string {
	rw := strings.ToLower(lk.Type.String())
	switch lk.Kind {
	case procfs.LockPOSIX:
		return fmt.Sprintf("POSIX %s lock on bytes %s", rw, lk.Range())
	case procfs.LockOFD:
		return fmt.Sprintf("OFD %s lock on bytes %s", rw, lk.Range())
	case procfs.LockFlock:
		if lk.Type == procfs.LockWrite {
			return "exclusive flock"
		}
		return "shared flock"
	case procfs.LockLease:
		switch {
		case lk.Lease != procfs.LeaseBreaking:
			return rw + " lease"
		case lk.Type == procfs.LockRead:
			// F_GETLEASE, and so fdinfo, shows the type the break leads to.
			return "write lease being broken down to a read lease"
		}
		return "lease being broken, to be given up"
	}
	return fmt.Sprintf("%s lock (%s) on bytes %s", lk.Kind, rw, lk.Range())
}

// aLock is describeLock with its article.
func aLock(lk *procfs.Lock) string {
	s := describeLock(lk)
	if strings.IndexByte("aeiouAEIOU", s[0]) >= 0 {
		return "an " + s
	}
	return "a " + s
}

// supportedLock refuses what cryo cannot take again exactly.
func supportedLock(lk *procfs.Lock) error {
	switch {
	case lk.Kind == procfs.LockLease && lk.Lease == procfs.LeaseBreaking:
		// Its break began with a conflicting open and runs on a deadline
		// (lease-break-time) nothing can set: taking the lease and
		// breaking it anew would restart the clock and signal again.
		return fmt.Errorf("%s: %w", aLock(lk), errs.ErrNotSupported)
	case lk.Kind == procfs.LockLease && lk.Lease != procfs.LeaseActive,
		lk.Kind != procfs.LockPOSIX && lk.Kind != procfs.LockOFD && lk.Kind != procfs.LockFlock && lk.Kind != procfs.LockLease:
		return fmt.Errorf("%s: %w", aLock(lk), errs.ErrNotSupported)
	case lk.Mandatory || lk.MSNFS:
		return fmt.Errorf("mandatory %s: %w", aLock(lk), errs.ErrNotSupported)
	case lk.Type != procfs.LockRead && lk.Type != procfs.LockWrite:
		return fmt.Errorf("%s: %w", aLock(lk), errs.ErrNotSupported)
	}
	return nil
}

// noteLocks records the locks the fdinfo of fd shows; id is its file id.
func (d *Dumper) noteLocks(fd *Fd, id uint32) error {
	ld := &d.locks
	var own []procfs.Lock
	posix := false
	for i := range fd.Info.Locks {
		lk := &fd.Info.Locks[i]
		if err := supportedLock(lk); err != nil {
			return err
		}
		if !d.opts.FileLocks {
			return fmt.Errorf("it holds %s; dump with --file-locks to checkpoint file locks: %w", aLock(lk), errs.ErrNotSupported)
		}
		switch lk.Kind {
		case procfs.LockPOSIX:
			// The fd's process owns every POSIX lock its fdinfo shows: the
			// kernel lists only the locks of the reader's fd table.
			if lk.Pid != fd.Pid {
				return fmt.Errorf("its fdinfo shows %s of pid %d: %w", aLock(lk), lk.Pid, errs.ErrNotSupported)
			}
			posix = true
		case procfs.LockLease:
			if err := leaseOwner(fd, lk); err != nil {
				return err
			}
			own = append(own, *lk)
		default:
			own = append(own, *lk)
		}
	}
	if posix {
		key := [2]uint64{uint64(fd.Pid), uint64(id)}
		if !ld.noted[key] {
			ld.noted[key] = true
			for _, lk := range fd.Info.Locks {
				if lk.Kind == procfs.LockPOSIX {
					ld.posix = append(ld.posix, heldLock{lk: lk, pid: fd.Pid, fd: fd.Num, link: fd.Link})
				}
			}
		}
	}
	if len(own) > 0 {
		dl := ld.desc[id]
		if dl == nil {
			dl = &descLocks{locks: own}
			ld.desc[id] = dl
			ld.order = append(ld.order, id)
		}
		dl.holders = append(dl.holders, heldLock{pid: fd.Pid, fd: fd.Num, link: fd.Link})
	}
	return nil
}

// leaseOwner refuses a lease whose break would not be signalled as it
// was: F_SETLEASE, taken again last, makes its caller the file's owner
// with the default signal, over what fown.go gave back.
func leaseOwner(fd *Fd, lk *procfs.Lock) error {
	cp, err := fd.Copy()
	if err != nil {
		return err
	}
	sig, err := unix.FcntlInt(uintptr(cp), unix.F_GETSIG, 0)
	if err != nil {
		return fmt.Errorf("F_GETSIG: %w", err)
	}
	owner, err := unix.FcntlInt(uintptr(cp), unix.F_GETOWN, 0)
	if err != nil {
		return fmt.Errorf("F_GETOWN: %w", err)
	}
	if sig != 0 || owner != lk.Pid {
		return fmt.Errorf("%s whose breaks go as signal %d to owner %d (F_SETSIG, F_SETOWN), which cryo does not restore: %w", aLock(lk), sig, owner, errs.ErrNotSupported)
	}
	return nil
}

// noteMapping records that pid maps m, for checkLocks, and refuses a
// mapping of a file under a write lease: the dump reads a mapping's file
// through a new open of it (map_files), and any open breaks a write lease
// (the process would be sent SIGIO, the open would wait for the lease to
// go). /proc/locks is read the first time, before any such open.
func (d *Dumper) noteMapping(pid int, m procfs.Mapping) error {
	ld := &d.locks
	k := lockFile{m.Dev, m.Inode}
	if _, ok := ld.mapped[k]; !ok {
		ld.mapped[k] = fmt.Sprintf("mapping %#x-%#x (%s) of pid %d", m.Start, m.End, m.RawPath, pid)
	}
	if ld.leases == nil {
		all, err := procfs.ReadLocks()
		if err != nil {
			return fmt.Errorf("file locks: %w", err)
		}
		ld.leases = map[lockFile]procfs.Lock{}
		for _, lk := range all {
			if lk.Kind == procfs.LockLease && !lk.Blocked {
				ld.leases[lockFile{lk.Dev, lk.Ino}] = lk
			}
		}
	}
	if lk, ok := ld.leases[k]; ok && lk.Type == procfs.LockWrite {
		return fmt.Errorf("mapping %#x-%#x (%s) of pid %d: the file is under %s (pid %d), which opening it to dump the mapping would break: %w",
			m.Start, m.End, m.RawPath, pid, aLock(&lk), lk.Pid, errs.ErrNotSupported)
	}
	return nil
}

// lockKey identifies a lock in /proc/locks, ids aside.
type lockKey struct {
	kind       procfs.LockKind
	typ        procfs.LockType
	pid        int
	file       lockFile
	start, end int64
}

func keyOf(lk *procfs.Lock) lockKey {
	return lockKey{lk.Kind, lk.Type, lk.Pid, lockFile{lk.Dev, lk.Ino}, lk.Start, lk.End}
}

// checkLocks runs once the whole tree is dumped: it chooses the fd each
// lock of a description is taken again through, and refuses the tree's
// locks that no fd of it shows.
func (d *Dumper) checkLocks() error {
	ld := &d.locks
	seen := map[lockKey]int{}
	for _, h := range ld.posix {
		seen[keyOf(&h.lk)]++
	}
	for _, id := range ld.order {
		dl := ld.desc[id]
		for _, lk := range dl.locks {
			seen[keyOf(&lk)]++
			if _, err := dl.taker(&lk); err != nil {
				return err
			}
		}
	}
	all, err := procfs.ReadLocks()
	if err != nil {
		return fmt.Errorf("file locks: %w", err)
	}
	var hidden []procfs.Lock // not the tree's by pid, on files it maps
	for i := range all {
		lk := &all[i]
		if lk.Blocked {
			if ld.pids[lk.Pid] {
				// Seizing a task interrupts its wait; a waiter of the
				// tree after the freeze means something else is wrong.
				return fmt.Errorf("pid %d waits for %s on inode %s:%d: %w", lk.Pid, aLock(lk), lk.Dev, lk.Ino, errs.ErrNotSupported)
			}
			continue
		}
		k := keyOf(lk)
		if seen[k] > 0 {
			seen[k]--
			continue
		}
		if lk.Kind != procfs.LockOFD && ld.pids[lk.Pid] {
			m, why := d.byMapping(lk)
			if why == "" {
				if err := d.keepMapped(lk, m); err != nil {
					return err
				}
				continue
			}
			d.log().Debug("a lock no fd shows, not held by a mapping", "lock", describeLock(lk), "pid", lk.Pid, "why", why)
			return fmt.Errorf("pid %d holds %s on inode %s:%d%s that no fd of the tree shows (held through a file only a mapping keeps, one passed out of the tree, or a thread's own fd table), which cryo cannot restore: %w",
				lk.Pid, aLock(lk), lk.Dev, lk.Ino, ld.whereMapped(lk), errs.ErrNotSupported)
		}
		if lk.Kind != procfs.LockPOSIX && ld.mapped[lockFile{lk.Dev, lk.Ino}] != "" {
			hidden = append(hidden, *lk)
		}
	}
	// A lock a mapping holds must not be shown by an fd outside the tree
	// either: one passed out of it would hold it.
	ask := append([]procfs.Lock(nil), hidden...)
	for _, ml := range ld.viaMap {
		ask = append(ask, ml.lk)
	}
	if len(ask) == 0 {
		return nil
	}
	// A lock of an open file description on a file the tree maps, that no
	// fd of the tree shows: another process's, or one the tree's mapping
	// alone keeps. Only fds outside the tree can tell.
	outside, err := locksOutside(ld.pids, ask)
	if err != nil {
		return err
	}
	for i := range hidden {
		lk := &hidden[i]
		k := keyOf(lk)
		if outside[k] > 0 {
			outside[k]--
			continue
		}
		return fmt.Errorf("%s on inode %s:%d, which the %s, is held by an open file description no fd shows: the tree's mapping may be what keeps it, which cryo cannot restore: %w",
			aLock(lk), lk.Dev, lk.Ino, ld.mapped[lockFile{lk.Dev, lk.Ino}], errs.ErrNotSupported)
	}
	for _, ml := range ld.viaMap {
		if k := keyOf(&ml.lk); outside[k] > 0 {
			return fmt.Errorf("pid %d holds %s on %s through an fd outside the tree (passed out of it): %w", ml.m.pid, aLock(&ml.lk), ml.m.path, errs.ErrNotSupported)
		}
	}
	return nil
}

func (ld *lockDump) whereMapped(lk *procfs.Lock) string {
	if m := ld.mapped[lockFile{lk.Dev, lk.Ino}]; m != "" {
		return ", the file of " + m
	}
	return ""
}

// taker returns the fd of the process that took lk (the pid /proc/locks
// shows for a flock or a lease), through which restore takes it again so
// that it shows the same pid; an OFD lock shows none, and any fd will do.
func (dl *descLocks) taker(lk *procfs.Lock) (heldLock, error) {
	h0 := dl.holders[0]
	if lk.Kind == procfs.LockOFD {
		return h0, nil
	}
	for _, h := range dl.holders {
		if h.pid == lk.Pid {
			return h, nil
		}
	}
	return heldLock{}, fmt.Errorf("fd %d (%s) of pid %d holds %s that pid %d took, which no longer holds it: restored, the lock would show another pid: %w",
		h0.fd, h0.link, h0.pid, aLock(lk), lk.Pid, errs.ErrNotSupported)
}

// locksOutside counts the locks among want that fds of processes outside
// the tree show.
func locksOutside(tree map[int]bool, want []procfs.Lock) (map[lockKey]int, error) {
	files := map[lockFile]bool{}
	for _, lk := range want {
		files[lockFile{lk.Dev, lk.Ino}] = true
	}
	got := map[lockKey]int{}
	err := eachFdOn(files, tree, func(pid, fd int) {
		info, err := procfs.FdinfoPid(pid, fd)
		if err != nil {
			return // closed since, or the process is gone
		}
		for i := range info.Locks {
			got[keyOf(&info.Locks[i])]++
		}
	})
	return got, err
}

// eachFdOn calls fn for every fd of every process but those of skip that
// is open on one of files. Processes and fds that go away meanwhile are
// passed over.
func eachFdOn(files map[lockFile]bool, skip map[int]bool, fn func(pid, fd int)) error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || skip[pid] {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range fds {
			fd, err := strconv.Atoi(f.Name())
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(dir+f.Name(), &st) != nil {
				continue
			}
			if files[lockFile{procfs.Dev{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}, st.Ino}] {
				fn(pid, fd)
			}
		}
	}
	return nil
}

// lockEntries are file-locks.img's entries: descriptions' locks first,
// in the order they were found, then the POSIX locks.
func (d *Dumper) lockEntries() []*filelock.FileLockEntry {
	ld := &d.locks
	var out []*filelock.FileLockEntry
	add := func(h heldLock, lk *procfs.Lock) {
		out = append(out, &filelock.FileLockEntry{
			Flag: proto.Uint32(criuKind(lk.Kind)), Type: proto.Uint32(uint32(lk.Type)),
			Pid: proto.Int32(int32(h.pid)), Fd: proto.Int32(int32(h.fd)),
			Start: proto.Int64(lk.Start), Len: proto.Int64(lk.Len()),
		})
	}
	for _, id := range ld.order {
		dl := ld.desc[id]
		for i := range dl.locks {
			h, _ := dl.taker(&dl.locks[i]) // checked by checkLocks
			add(h, &dl.locks[i])
		}
	}
	for _, ml := range ld.viaMap {
		e := &filelock.FileLockEntry{
			Flag: proto.Uint32(criuKind(ml.lk.Kind)), Type: proto.Uint32(uint32(ml.lk.Type)),
			Pid: proto.Int32(int32(ml.m.pid)), Fd: proto.Int32(mappedFd(ml.m.id)), Start: proto.Int64(0), Len: proto.Int64(0),
		}
		out = append(out, e)
	}
	for i := range ld.posix {
		add(ld.posix[i], &ld.posix[i].lk)
	}
	return out
}

func criuKind(k procfs.LockKind) uint32 {
	switch k {
	case procfs.LockPOSIX:
		return imageset.FlPOSIX
	case procfs.LockFlock:
		return imageset.FlFlock
	case procfs.LockOFD:
		return imageset.FlOFD
	case procfs.LockLease:
		return imageset.FlLease
	}
	panic("files: no CRIU kind for lock kind " + k.String())
}

// Restore.

// imageLock is one entry of file-locks.img, checked against the image.
type imageLock struct {
	e    *filelock.FileLockEntry
	lk   procfs.Lock // the lock as fdinfo will show it
	pid  int
	fd   uint64
	file uint32 // the file id of the fd, or of the mapping's file
	// mapped: the lock is held by the file of pid's mapping of file, not
	// by an fd (locks_mapped.go); taken once TakeMappingLocks took it.
	mapped, taken bool
}

func (il *imageLock) String() string { return describeLock(&il.lk) }

// loadLocks reads file-locks.img, if the image has one, and checks every
// entry against the image: a known kind and type, a range, and the fd of
// a live process of the tree to take it through.
func (r *Restorer) loadLocks() error {
	f := imageset.FileLocks
	if !r.set.Dir.Has(f.Name) {
		return nil
	}
	ents, err := imageset.ReadAll(r.set.Dir, f, func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	if err != nil {
		return err
	}
	fds := map[[2]uint64]uint32{}
	live := map[int]bool{}
	for _, p := range r.set.Procs {
		if p.Zombie {
			continue
		}
		live[int(p.Pid())] = true
		for _, fd := range p.Fds {
			fds[[2]uint64{uint64(p.Pid()), uint64(fd.GetFd())}] = fd.GetId()
		}
	}
	for i, e := range ents {
		bad := func(format string, args ...any) error {
			return lockCorrupt("entry %d (flag %d, type %d, pid %d, fd %d, %d+%d): "+format,
				append([]any{i, e.GetFlag(), e.GetType(), e.GetPid(), e.GetFd(), e.GetStart(), e.GetLen()}, args...)...)
		}
		il := imageLock{e: e, pid: int(e.GetPid()), fd: uint64(e.GetFd())}
		lk := &il.lk
		switch e.GetFlag() {
		case imageset.FlPOSIX:
			lk.Kind, lk.Pid = procfs.LockPOSIX, il.pid
		case imageset.FlOFD:
			lk.Kind, lk.Pid = procfs.LockOFD, -1
		case imageset.FlFlock:
			lk.Kind, lk.Pid = procfs.LockFlock, il.pid
		case imageset.FlLease:
			lk.Kind, lk.Pid, lk.Lease = procfs.LockLease, il.pid, procfs.LeaseActive
			if e.GetType()&imageset.LeaseBreaking != 0 {
				lk.Lease = procfs.LeaseBreaking
				lk.Type = procfs.LockType(e.GetType() &^ imageset.LeaseBreaking)
				return fmt.Errorf("%s entry %d: %s: %w", f.Name, i, aLock(lk), errs.ErrNotSupported)
			}
		default:
			return bad("unknown kind")
		}
		switch e.GetType() {
		case uint32(procfs.LockRead), uint32(procfs.LockWrite):
			lk.Type = procfs.LockType(e.GetType())
		default:
			// CRIU's LOCK_MAND flocks (type 32 and up) are gone from the
			// kernel since 5.15.
			return bad("unknown type")
		}
		start, n := e.GetStart(), e.GetLen()
		whole := lk.Kind == procfs.LockFlock || lk.Kind == procfs.LockLease
		if start < 0 || n < 0 || (whole && (start != 0 || n != 0)) || (n > 0 && start > (1<<63-1)-n+1) {
			return bad("bad range")
		}
		lk.Start, lk.End, lk.ToEOF = start, 1<<63-1, true
		if n > 0 {
			lk.End, lk.ToEOF = start+n-1, false
		}
		if mid, ok := mappedID(e.GetFd()); ok {
			if lk.Kind != procfs.LockFlock || !live[il.pid] || r.set.Files[mid].GetReg() == nil {
				return bad("held by a mapping: a flock of a live process of the tree on a regular file of %s", imageset.Files.Name)
			}
			il.file, il.mapped, il.fd = mid, true, 0
			r.locks = append(r.locks, il)
			continue
		}
		id, ok := fds[[2]uint64{uint64(il.pid), il.fd}]
		if !ok {
			return bad("pid %d has no fd %d", il.pid, il.fd)
		}
		il.file = id
		r.locks = append(r.locks, il)
	}
	if len(r.locks) > 0 && !r.opts.FileLocks {
		return fmt.Errorf("the image holds %d file locks (fd %d of pid %d holds %s): restore with --file-locks to take them again: %w",
			len(r.locks), r.locks[0].fd, r.locks[0].pid, aLock(&r.locks[0].lk), errs.ErrNotSupported)
	}
	return nil
}

func lockCorrupt(format string, args ...any) error {
	return &image.FormatError{File: imageset.FileLocks.Name, Offset: -1, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
}

// TakeLocks takes every file lock of the image again, in the process and
// through the fd each entry names, and reads them all back. It must run
// once nothing more will close an fd in any process of the tree: closing
// any fd of a file drops the process's POSIX locks on it. Leases, flock
// and OFD locks first, which belong to open file descriptions; POSIX locks
// last.
func (r *Restorer) TakeLocks() error {
	if len(r.locks) == 0 {
		return nil
	}
	for _, posix := range []bool{false, true} {
		var pids []int
		byPid := map[int][]*imageLock{}
		for i := range r.locks {
			il := &r.locks[i]
			if (il.lk.Kind == procfs.LockPOSIX) != posix || il.mapped {
				continue
			}
			if byPid[il.pid] == nil {
				pids = append(pids, il.pid)
			}
			byPid[il.pid] = append(byPid[il.pid], il)
		}
		for _, pid := range pids {
			if posix {
				// The kernel walks a process's locks on the file from the
				// lowest start up to where a new lock goes: taking them
				// from the highest start down is about twice as fast for
				// ten thousand (0.5 s instead of 0.9 s here).
				ls := byPid[pid]
				sort.SliceStable(ls, func(i, j int) bool { return ls[i].lk.Start > ls[j].lk.Start })
			}
			p := r.procs[pid]
			if p == nil {
				return fmt.Errorf("file locks of pid %d: the process was not restored", pid)
			}
			if err := r.takeLocks(p, byPid[pid]); err != nil {
				return err
			}
		}
	}
	return r.verifyLocks()
}

// Batcher is a Proc that runs independent calls in one ptrace stop
// (inject.Batch): a thousand locks are then a few stops, not a thousand.
type Batcher interface {
	Proc
	Batch() *inject.Batch
}

// takeLocks takes ils in p without waiting: a conflict is an error.
func (r *Restorer) takeLocks(p Proc, ils []*imageLock) error {
	bp, ok := p.(Batcher)
	if !ok {
		for _, il := range ils {
			nr, args, data := lockCall(il)
			if data != nil {
				a, err := p.Arg(data)
				if err != nil {
					return err
				}
				args[2] = a
			}
			if _, err := p.Call(fmt.Sprintf("take %s through fd %d", il, il.fd), nr, args...); err != nil {
				return r.lockFailed(il, err)
			}
		}
		return nil
	}
	b := bp.Batch()
	for _, il := range ils {
		il := il
		nr, args, data := lockCall(il)
		var st inject.Step
		if data != nil {
			st = b.AddArg("take a file lock", data, nr, func(a uint64) []uint64 { return []uint64{args[0], args[1], a} })
		} else {
			st = b.Add("take a file lock", nr, args...)
		}
		st.Describe(func() string { return fmt.Sprintf("take %s through fd %d", il, il.fd) })
	}
	if err := b.Run(); err != nil {
		var se *inject.StepError
		if errors.As(err, &se) && se.Index < len(ils) {
			return r.lockFailed(ils[se.Index], err)
		}
		return fmt.Errorf("file locks of pid %d: %w", p.Pid(), err)
	}
	return nil
}

// lockCall is the syscall that takes il without waiting, and the struct
// flock its third argument points to, if any.
func lockCall(il *imageLock) (uintptr, []uint64, []byte) {
	lk := &il.lk
	switch lk.Kind {
	case procfs.LockFlock:
		op := uint64(unix.LOCK_SH)
		if lk.Type == procfs.LockWrite {
			op = unix.LOCK_EX
		}
		return unix.SYS_FLOCK, []uint64{il.fd, op | unix.LOCK_NB}, nil
	case procfs.LockLease:
		return unix.SYS_FCNTL, []uint64{il.fd, unix.F_SETLEASE, uint64(lk.Type)}, nil
	}
	cmd := uint64(unix.F_SETLK)
	if lk.Kind == procfs.LockOFD {
		cmd = unix.F_OFD_SETLK // l_pid must be 0
	}
	fl := unix.Flock_t{Type: int16(lk.Type), Whence: unix.SEEK_SET, Start: lk.Start, Len: lk.Len()}
	return unix.SYS_FCNTL, []uint64{il.fd, cmd, 0}, append([]byte(nil), kabi.Bytes(&fl)...)
}

// lockFailed explains why il could not be taken: the conflicting locks
// (or, for a lease, opens) of other processes, named.
func (r *Restorer) lockFailed(il *imageLock, err error) error {
	path := fdPath(il.pid, il.fd)
	// F_SETLK says EACCES or EAGAIN for a conflict; F_SETLEASE's EACCES is
	// a permission.
	if !errors.Is(err, unix.EAGAIN) && (il.lk.Kind == procfs.LockLease || !errors.Is(err, unix.EACCES)) {
		return fmt.Errorf("file lock of fd %d (%s) of pid %d: %w", il.fd, path, il.pid, err)
	}
	var st unix.Stat_t
	if serr := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", il.pid, il.fd), &st); serr != nil {
		return fmt.Errorf("file lock of fd %d (%s) of pid %d: %w", il.fd, path, il.pid, err)
	}
	file := lockFile{procfs.Dev{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}, st.Ino}
	var who []string
	if il.lk.Kind == procfs.LockLease {
		who = r.leaseConflicts(il, file)
	} else {
		who = lockConflicts(il, file)
	}
	held := "held since the dump by a process outside the tree"
	if len(who) > 0 {
		held = "held by " + strings.Join(who, "; ")
	}
	return fmt.Errorf("fd %d (%s) of pid %d cannot take its %s again, %s: %w", il.fd, path, il.pid, il, held, err)
}

// lockConflicts names the locks on file that keep il from being taken.
func lockConflicts(il *imageLock, file lockFile) []string {
	all, err := procfs.ReadLocks()
	if err != nil {
		return nil
	}
	var who []string
	var ofd []procfs.Lock
	for i := range all {
		lk := &all[i]
		if lk.Blocked || (lockFile{lk.Dev, lk.Ino}) != file || !conflicts(&il.lk, lk) {
			continue
		}
		if lk.Pid == -1 {
			ofd = append(ofd, *lk)
			continue
		}
		who = append(who, fmt.Sprintf("pid %d (%s), with %s", lk.Pid, comm(lk.Pid), aLock(lk)))
	}
	if len(ofd) > 0 {
		// An OFD lock shows no pid: the fds showing it name its holders.
		eachFdOn(map[lockFile]bool{file: true}, nil, func(pid, fd int) {
			info, err := procfs.FdinfoPid(pid, fd)
			if err != nil {
				return
			}
			for i := range info.Locks {
				for _, o := range ofd {
					if keyOf(&info.Locks[i]) == keyOf(&o) {
						who = append(who, fmt.Sprintf("fd %d of pid %d (%s), with %s", fd, pid, comm(pid), aLock(&o)))
					}
				}
			}
		})
	}
	return who
}

// conflicts says whether held keeps want from being taken.
func conflicts(want, held *procfs.Lock) bool {
	if want.Type != procfs.LockWrite && held.Type != procfs.LockWrite {
		return false
	}
	switch want.Kind {
	case procfs.LockFlock:
		return held.Kind == procfs.LockFlock
	case procfs.LockPOSIX, procfs.LockOFD:
		if held.Kind != procfs.LockPOSIX && held.Kind != procfs.LockOFD {
			return false
		}
		if want.Kind == procfs.LockPOSIX && held.Kind == procfs.LockPOSIX && held.Pid == want.Pid {
			return false // a process's own locks never conflict
		}
		return want.Start <= held.End && held.Start <= want.End
	}
	return false
}

// leaseConflicts names the opens of file that keep the lease il from being
// taken: any other for a write lease, those for writing for a read lease.
func (r *Restorer) leaseConflicts(il *imageLock, file lockFile) []string {
	var who []string
	eachFdOn(map[lockFile]bool{file: true}, nil, func(pid, fd int) {
		if pid == il.pid && uint64(fd) == il.fd {
			return
		}
		info, err := procfs.FdinfoPid(pid, fd)
		if err != nil {
			return
		}
		if il.lk.Type == procfs.LockRead && info.Flags&unix.O_ACCMODE == unix.O_RDONLY {
			return
		}
		who = append(who, fmt.Sprintf("fd %d of pid %d (%s), open with flags %#o", fd, pid, comm(pid), info.Flags))
	})
	return who
}

// verifyLocks reads every lock back: each fd that holds a locked open
// file description, or through which its process took POSIX locks, must
// show exactly the locks it showed at dump.
func (r *Restorer) verifyLocks() error {
	type pfd struct {
		pid int
		fd  uint64
	}
	if err := r.verifyMappedLocks(); err != nil {
		return err
	}
	byFile := map[uint32][]*imageLock{}
	for i := range r.locks {
		il := &r.locks[i]
		if !il.mapped {
			byFile[il.file] = append(byFile[il.file], il)
		}
	}
	want := map[pfd][]procfs.Lock{}
	for _, p := range r.set.Procs {
		if p.Zombie {
			continue
		}
		pid := int(p.Pid())
		for _, fd := range p.Fds {
			for _, il := range byFile[fd.GetId()] {
				if il.lk.Kind != procfs.LockPOSIX || il.pid == pid {
					k := pfd{pid, uint64(fd.GetFd())}
					want[k] = append(want[k], il.lk)
				}
			}
		}
	}
	keys := make([]pfd, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].pid < keys[j].pid || (keys[i].pid == keys[j].pid && keys[i].fd < keys[j].fd)
	})
	for _, k := range keys {
		info, err := procfs.FdinfoPid(k.pid, int(k.fd))
		if err != nil {
			return fmt.Errorf("read back the file locks of fd %d of pid %d: %w", k.fd, k.pid, err)
		}
		left := map[lockKey]int{}
		for i := range info.Locks {
			lk := info.Locks[i]
			lk.Dev, lk.Ino = procfs.Dev{}, 0
			left[keyOf(&lk)]++
		}
		for _, lk := range want[k] {
			if left[keyOf(&lk)] == 0 {
				return fmt.Errorf("fd %d (%s) of pid %d does not hold its %s after restore (fdinfo shows %d locks): %w",
					k.fd, fdPath(k.pid, k.fd), k.pid, describeLock(&lk), len(info.Locks), errLockLost)
			}
			left[keyOf(&lk)]--
		}
		for key, n := range left {
			if n > 0 {
				lk := procfs.Lock{Kind: key.kind, Type: key.typ, Start: key.start, End: key.end, ToEOF: key.end == 1<<63-1}
				return fmt.Errorf("fd %d (%s) of pid %d holds %s after restore that it did not hold: %w",
					k.fd, fdPath(k.pid, k.fd), k.pid, aLock(&lk), errLockLost)
			}
		}
	}
	return nil
}

// errLockLost marks a lock read back different from what was dumped.
var errLockLost = errors.New("file locks differ from the image's")

func fdPath(pid int, fd uint64) string {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return "?"
	}
	return l
}

func comm(pid int) string {
	b, err := procfs.ReadFileBounded(fmt.Sprintf("/proc/%d/comm", pid), 64)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

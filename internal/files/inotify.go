package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// inotify instances, with every watch at its watch descriptor.
var inotifyKind = Kind{
	Name:    "inotify",
	Type:    fdinfo.FdTypes_INOTIFY,
	Dump:    func() dumper { return inotifyDump{} },
	Restore: func() opener { return inotifyOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		return Description{Path: fmt.Sprintf("anon_inode:inotify %d watches", len(f.GetIfy().GetWd()))}
	},
}

type inotifyDump struct{}

func (inotifyDump) match(fd *Fd) bool { return fd.Link == "anon_inode:inotify" }

// fhMinEntries is CRIU's fh_entry_sizes.min_entries: an f_handle carries at
// least this many u64 words (MAX_HANDLE_SZ bytes), zero-padded.
const fhMinEntries = 16

// dump records an inotify instance: each watch with its wd, mask
// and the watched inode as a file handle (fdinfo prints one per watch), by
// which restore finds the inode again whatever its path has become.
//
// Events queued and not read yet are not in fdinfo and cannot be copied
// without consuming them; an instance with any is refused rather than
// restored without them.
func (inotifyDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	cp, err := fd.Copy()
	if err != nil {
		return 0, err
	}
	queued, err := unix.IoctlGetInt(cp, kabi.FIONREAD)
	if err != nil {
		return 0, fmt.Errorf("inotify queue length (FIONREAD): %w", err)
	}
	if queued > 0 {
		return 0, fmt.Errorf("an inotify instance with %d bytes of unread events (restoring queued events): %w", queued, errs.ErrNotSupported)
	}
	ify := &fsnotify.InotifyFileEntry{Flags: proto.Uint32(fd.Flags), Fown: noOwner()}
	for _, w := range fd.Info.Inotify {
		if w.Fhandle == nil {
			return 0, fmt.Errorf("inotify watch %d on inode %d: the kernel gave no file handle for it (the filesystem cannot encode one): %w", w.WD, w.Ino, errs.ErrNotSupported)
		}
		words := make([]uint64, max(fhMinEntries, (len(w.Fhandle)+7)/8))
		for i, b := range w.Fhandle {
			words[i/8] |= uint64(b) << (8 * (i % 8))
		}
		ify.Wd = append(ify.Wd, &fsnotify.InotifyWdEntry{
			IIno: proto.Uint64(w.Ino), Mask: proto.Uint32(w.Mask), IgnoredMask: proto.Uint32(w.IgnoredMask),
			SDev: proto.Uint32(w.SDev), Wd: proto.Uint32(uint32(w.WD)),
			FHandle: &fh.FhEntry{Bytes: proto.Uint32(uint32(len(w.Fhandle))), Type: proto.Uint32(uint32(w.FhandleType)), Handle: words},
		})
	}
	// The kernel lists the newest watch first; restore adds them by wd.
	sort.Slice(ify.Wd, func(i, j int) bool { return ify.Wd[i].GetWd() < ify.Wd[j].GetWd() })
	id := d.Add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_INOTIFY.Enum(), Ify: ify})
	for _, w := range ify.Wd {
		w.Id = proto.Uint32(id)
	}
	return id, nil
}

type inotifyOpen struct{}

// maxWdGap bounds the watch descriptors restore burns to reach the wds of
// the image (see addWatches), two syscalls of cryo's each.
const maxWdGap = 1 << 20

// open re-creates an inotify instance with every watch at its wd.
// Only inotify_init1 is injected: the watches are added by cryo itself on
// its own copy of the new file (pidfd_getfd), through the watched inodes
// opened by file handle, so no path has to be found or trusted.
func (inotifyOpen) open(_ *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	fd, err := p.Call("inotify_init1", unix.SYS_INOTIFY_INIT1, unix.IN_CLOEXEC|unix.IN_NONBLOCK)
	if err != nil {
		return 0, err
	}
	ifd, err := kabi.GetFd(p.Pid(), int(fd))
	if err != nil {
		return 0, fmt.Errorf("the new inotify fd: %w", err)
	}
	defer unix.Close(ifd)
	w := &watcher{ifd: ifd, mounts: map[uint32][]int{}, dummies: map[int32]bool{}}
	defer w.close()
	if err := w.addWatches(f.GetId(), f.GetIfy()); err != nil {
		return 0, fmt.Errorf("inotify: %w", err)
	}
	// The instance was made non-blocking for draining; the file status
	// flags are the open file description's, shared with the process.
	if _, err := unix.FcntlInt(uintptr(ifd), unix.F_SETFL, int(f.GetIfy().GetFlags()&unix.O_NONBLOCK)); err != nil {
		return 0, fmt.Errorf("inotify: set flags: %w", err)
	}
	return fd, nil
}

// watcher adds watches to one inotify instance.
type watcher struct {
	ifd     int
	mounts  map[uint32][]int // sdev → fds on its mounts, for open_by_handle_at
	infos   []procfs.Mount
	opened  []int // O_PATH fds on the watched inodes
	dummy   string
	dummies map[int32]bool // wds of dummy watches whose IN_IGNORED may be queued
}

func (w *watcher) close() {
	for _, fds := range w.mounts {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for _, fd := range w.opened {
		unix.Close(fd)
	}
	if w.dummy != "" {
		os.Remove(w.dummy)
	}
}

// addWatches gives every watch its wd of the image. The kernel hands out
// wds in increasing order from 1, skipping those in use, and never goes
// back to a freed one until it wraps (idr_alloc_cyclic in
// fs/notify/inotify/inotify_user.c), so the watches are added by wd and
// each hole is consumed by adding and removing a dummy watch (CRIU does
// the same in fsnotify.c).
//
// Each removal queues an IN_IGNORED event, which must not reach the
// program. So the watches are first added with a mask that reports
// nothing but the inode's deletion, holes filled, the queue drained (only
// the dummies' IN_IGNORED may be there), and only then is each watch given
// its real mask, which keeps its wd. Events on the watched files start from
// that moment, as they would have had the program never been checkpointed
// past its dump.
func (w *watcher) addWatches(id uint32, ify *fsnotify.InotifyFileEntry) error {
	wds := append([]*fsnotify.InotifyWdEntry(nil), ify.GetWd()...)
	sort.Slice(wds, func(i, j int) bool { return wds[i].GetWd() < wds[j].GetWd() })
	paths := make([]string, len(wds))
	last, gaps := 0, 0
	for i, wd := range wds {
		want := int(wd.GetWd())
		if want <= last || want > 1<<31-1 {
			return corrupt("inotify (file %d): watch descriptor %d repeated or out of range", id, want)
		}
		if gaps += want - last - 1; gaps > maxWdGap {
			return fmt.Errorf("watch descriptor %d: more than %d unused wds below it to skip: %w", want, maxWdGap, errs.ErrNotSupported)
		}
		for next := last + 1; next < want; next++ {
			if err := w.burn(next); err != nil {
				return err
			}
		}
		path, err := w.open(id, wd)
		if err != nil {
			return err
		}
		paths[i] = path
		got, err := unix.InotifyAddWatch(w.ifd, path, unix.IN_DELETE_SELF|unix.IN_MASK_CREATE)
		if err != nil {
			return fmt.Errorf("watch %d on inode %d: %w", want, wd.GetIIno(), err)
		}
		if got != want {
			return fmt.Errorf("watch on inode %d got wd %d, the image has %d: the kernel no longer allocates watch descriptors in order", wd.GetIIno(), got, want)
		}
		last = want
	}
	if err := w.drain(); err != nil {
		return err
	}
	for i, wd := range wds {
		got, err := unix.InotifyAddWatch(w.ifd, paths[i], wd.GetMask())
		if err != nil {
			return fmt.Errorf("watch %d on inode %d: mask %#x: %w", wd.GetWd(), wd.GetIIno(), wd.GetMask(), err)
		}
		if got != int(wd.GetWd()) {
			return fmt.Errorf("watch on inode %d: setting its mask gave wd %d, not %d: was the inode deleted during the restore?", wd.GetIIno(), got, wd.GetWd())
		}
	}
	return nil
}

// burn uses up wd with a dummy watch on a directory of cryo's own.
func (w *watcher) burn(want int) error {
	if w.dummy == "" {
		d, err := os.MkdirTemp("", "cryo-inotify-")
		if err != nil {
			return fmt.Errorf("directory for dummy watches: %w", err)
		}
		w.dummy = d
	}
	got, err := unix.InotifyAddWatch(w.ifd, w.dummy, unix.IN_DELETE_SELF)
	if err != nil {
		return fmt.Errorf("dummy watch for wd %d: %w", want, err)
	}
	w.dummies[int32(got)] = true
	if _, err := unix.InotifyRmWatch(w.ifd, uint32(got)); err != nil {
		return fmt.Errorf("remove dummy watch %d: %w", got, err)
	}
	if got != want {
		return fmt.Errorf("dummy watch got wd %d, wanted %d: the kernel no longer allocates watch descriptors in order", got, want)
	}
	if len(w.dummies) >= 4096 { // stay far below max_queued_events
		return w.drain()
	}
	return nil
}

// drain reads the queue, which must hold only the dummies' IN_IGNORED.
func (w *watcher) drain() error {
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.ifd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return fmt.Errorf("drain dummy events: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint32(buf[off+4:])
			if !w.dummies[wd] || mask != unix.IN_IGNORED {
				return fmt.Errorf("event %#x on wd %d while the watches were being restored (was a watched inode deleted?)", mask, wd)
			}
			off += unix.SizeofInotifyEvent + int(binary.LittleEndian.Uint32(buf[off+12:]))
		}
	}
	clear(w.dummies)
	return nil
}

// open opens the watched inode by its file handle and returns a path to it
// (/proc/self/fd/N: the magic link lands on that very inode).
func (w *watcher) open(id uint32, wd *fsnotify.InotifyWdEntry) (string, error) {
	fh := wd.GetFHandle()
	n := int(fh.GetBytes())
	if n == 0 || n > 128 || n > 8*len(fh.GetHandle()) {
		return "", corrupt("inotify (file %d): watch %d: file handle of %d bytes in %d words", id, wd.GetWd(), n, len(fh.GetHandle()))
	}
	raw := make([]byte, 8*len(fh.GetHandle()))
	for i, v := range fh.GetHandle() {
		binary.LittleEndian.PutUint64(raw[8*i:], v)
	}
	handle := unix.NewFileHandle(int32(fh.GetType()), raw[:n])
	mounts, err := w.mountsOf(wd.GetSDev())
	if err != nil {
		return "", err
	}
	dev := procfs.KernelDev(wd.GetSDev())
	var lastErr error = fmt.Errorf("no mount of device %d:%d", dev.Major, dev.Minor)
	for _, m := range mounts {
		fd, err := unix.OpenByHandleAt(m, handle, unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			lastErr = err
			continue
		}
		w.opened = append(w.opened, fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "", err
		}
		if st.Ino != wd.GetIIno() {
			return "", fmt.Errorf("watch %d: file handle of inode %d opens inode %d", wd.GetWd(), wd.GetIIno(), st.Ino)
		}
		return "/proc/self/fd/" + strconv.Itoa(fd), nil
	}
	if errors.Is(lastErr, unix.ESTALE) {
		lastErr = fmt.Errorf("%w: the file no longer exists", lastErr)
	}
	if errors.Is(lastErr, unix.EPERM) {
		lastErr = fmt.Errorf("%w (open_by_handle_at needs CAP_DAC_READ_SEARCH)", lastErr)
	}
	return "", fmt.Errorf("watch %d: open inode %d of device %d:%d by handle: %w", wd.GetWd(), wd.GetIIno(), dev.Major, dev.Minor, lastErr)
}

// mountsOf returns fds on cryo's mounts of the filesystem whose
// kernel-encoded device is sdev, whole-filesystem mounts first.
func (w *watcher) mountsOf(sdev uint32) ([]int, error) {
	if fds, ok := w.mounts[sdev]; ok {
		return fds, nil
	}
	if w.infos == nil {
		ms, err := procfs.MountinfoPid(os.Getpid())
		if err != nil {
			return nil, err
		}
		w.infos = ms
	}
	dev := procfs.KernelDev(sdev)
	var fds []int
	for pass := 0; pass < 2; pass++ {
		for _, m := range w.infos {
			if m.Dev != dev || (m.Root == "/") != (pass == 0) {
				continue
			}
			// Not O_PATH: open_by_handle_at's mount fd must be a real open
			// (fdget ignores O_PATH files: EBADF).
			fd, err := unix.Open(m.MountPoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue // hidden under another mount, or gone
			}
			fds = append(fds, fd)
		}
	}
	w.mounts[sdev] = fds
	return fds, nil
}

package dump

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"

	"github.com/cryo-project/cryo/internal/kabi"
)

// fhMinEntries is CRIU's fh_entry_sizes.min_entries: an f_handle carries at
// least this many u64 words (MAX_HANDLE_SZ bytes), zero-padded.
const fhMinEntries = 16

// dumpInotify records an inotify instance: each watch with its wd, mask
// and the watched inode as a file handle (fdinfo prints one per watch), by
// which restore finds the inode again whatever its path has become.
//
// Events queued and not read yet are not in fdinfo and cannot be copied
// without consuming them; an instance with any is refused rather than
// restored without them.
func dumpInotify(e *fdEnv) (uint32, error) {
	fd, err := e.grabFd()
	if err != nil {
		return 0, err
	}
	queued, err := unix.IoctlGetInt(fd, kabi.FIONREAD)
	unix.Close(fd)
	if err != nil {
		return 0, fmt.Errorf("inotify queue length (FIONREAD): %w", err)
	}
	if queued > 0 {
		return 0, fmt.Errorf("an inotify instance with %d bytes of unread events (restoring queued events): %w", queued, ErrNotSupported)
	}
	ify := &fsnotify.InotifyFileEntry{Flags: proto.Uint32(e.flags), Fown: noOwner()}
	for _, w := range e.info.Inotify {
		if w.Fhandle == nil {
			return 0, fmt.Errorf("inotify watch %d on inode %d: the kernel gave no file handle for it (the filesystem cannot encode one): %w", w.WD, w.Ino, ErrNotSupported)
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
	id := e.p.files.add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_INOTIFY.Enum(), Ify: ify})
	for _, w := range ify.Wd {
		w.Id = proto.Uint32(id)
	}
	return id, nil
}

package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/image"
)

// openPidfd reopens a pidfd on a process of the tree, which exists (with
// its pid) by the time files are restored: the dump refused pidfds on
// anything else, so a pid outside the image means a corrupt image. A pidfd
// on a process that is a zombie in the image is opened while it still
// runs, before it dies, and so refers to the zombie as the original did.
func openPidfd(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	p := f.GetPidfd()
	pid := p.GetNspid()
	if pid <= 0 || r.t.byPid[uint32(pid)] == nil {
		return 0, &image.FormatError{File: "files.img", Offset: -1,
			Err: fmt.Errorf("pidfd (file %d) on pid %d, not a process of the image: %w", f.GetId(), pid, image.ErrImageCorrupt)}
	}
	// PIDFD_NONBLOCK is O_NONBLOCK, PIDFD_THREAD (6.9) is O_EXCL; the dump
	// only took thread pidfds on leaders.
	flags := uint64(p.GetFlags() & (unix.O_NONBLOCK | unix.O_EXCL))
	return c.call(c.leader, fmt.Sprintf("pidfd_open %d", pid), unix.SYS_PIDFD_OPEN, uint64(pid), flags)
}

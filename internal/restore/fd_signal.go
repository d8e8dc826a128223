package restore

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
)

// openSignalfd re-creates a signalfd on the dumped mask. The signals it
// reads are the process's and thread's pending ones, restored with them.
func openSignalfd(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	s := f.GetSgfd()
	var mask [8]byte
	binary.LittleEndian.PutUint64(mask[:], s.GetSigmask())
	p, err := c.arg(mask[:])
	if err != nil {
		return 0, err
	}
	flags := uint64(unix.SFD_CLOEXEC)
	if s.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	return c.call(c.leader, "signalfd4", unix.SYS_SIGNALFD4, ^uint64(0), p, 8, flags)
}

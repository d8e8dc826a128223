package restore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/kabi"
)

const nsecPerSec = 1_000_000_000

// openTimerfd re-creates a timerfd: same clock and flags, armed with the
// time that was left at the dump and the same period, and with the
// expirations not read yet.
//
// The image holds the time left, relative, whatever the settime flags (it
// is what fdinfo shows; CRIU's images mean the same). A TFD_TIMER_ABSTIME
// timer is re-armed absolute at the restored process's "now" on its clock
// plus that time left: passing the relative value with the flag would name
// an instant long past and fire at once, and keeping the flag keeps what
// the program can observe (fdinfo's settime flags, TFD_TIMER_CANCEL_ON_SET
// on a realtime clock). As for every timer cryo restores, the time the
// process spent checkpointed does not count.
//
// Pending expirations come back through TFD_IOC_SET_TICKS, after settime
// (which clears them).
func openTimerfd(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	c := r.c
	t := f.GetTfd()
	if t.GetVnsec() >= nsecPerSec || t.GetInsec() >= nsecPerSec || t.GetVsec() > 1<<62 || t.GetIsec() > 1<<62 {
		return 0, &image.FormatError{File: "files.img", Offset: -1,
			Err: fmt.Errorf("timerfd (file %d): bad time (%d, %d) / (%d, %d): %w", f.GetId(), t.GetVsec(), t.GetVnsec(), t.GetIsec(), t.GetInsec(), image.ErrImageCorrupt)}
	}
	clock := uint64(t.GetClockid())
	flags := uint64(unix.TFD_CLOEXEC)
	if t.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.TFD_NONBLOCK
	}
	fd, err := c.call(c.leader, "timerfd_create", unix.SYS_TIMERFD_CREATE, clock, flags)
	if err != nil {
		return 0, err
	}
	spec := kabi.Itimerspec{
		IntervalSec: int64(t.GetIsec()), IntervalNsec: int64(t.GetInsec()),
		ValueSec: int64(t.GetVsec()), ValueNsec: int64(t.GetVnsec()),
	}
	armed := spec.ValueSec != 0 || spec.ValueNsec != 0
	if !armed && (spec.IntervalSec != 0 || spec.IntervalNsec != 0) {
		// A periodic timer is always armed once caught up (see the dump);
		// zero left means it is due now.
		spec.ValueNsec, armed = 1, true
	}
	if armed && t.GetSettimeFlags()&unix.TFD_TIMER_ABSTIME != 0 {
		now, err := r.clockNow(clock)
		if err != nil {
			return 0, err
		}
		spec.ValueSec += now.Sec
		spec.ValueNsec += now.Nsec
		if spec.ValueNsec >= nsecPerSec {
			spec.ValueSec++
			spec.ValueNsec -= nsecPerSec
		}
	}
	p, err := c.arg(kabi.Bytes(&spec))
	if err != nil {
		return 0, err
	}
	if _, err := c.call(c.leader, "timerfd_settime", unix.SYS_TIMERFD_SETTIME, fd, uint64(t.GetSettimeFlags()), p, 0); err != nil {
		return 0, err
	}
	if n := t.GetTicks(); n != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		p, err := c.arg(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := c.call(c.leader, "ioctl(TFD_IOC_SET_TICKS)", unix.SYS_IOCTL, fd, kabi.TFD_IOC_SET_TICKS, p); err != nil {
			if errors.Is(err, unix.ENOTTY) {
				return 0, fmt.Errorf("timerfd with %d unread expirations: this kernel has no TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE): %w", n, ErrNotSupported)
			}
			return 0, err
		}
	}
	return fd, nil
}

// clockNow reads clock in the process being restored (its time namespace
// is the one its timers live in).
func (r *restorer) clockNow(clock uint64) (unix.Timespec, error) {
	c := r.c
	p, err := c.arg(make([]byte, 16))
	if err != nil {
		return unix.Timespec{}, err
	}
	if _, err := c.call(c.leader, "clock_gettime", unix.SYS_CLOCK_GETTIME, clock, p); err != nil {
		return unix.Timespec{}, err
	}
	b, err := c.out(p, 16)
	if err != nil {
		return unix.Timespec{}, err
	}
	return unix.Timespec{Sec: int64(binary.LittleEndian.Uint64(b)), Nsec: int64(binary.LittleEndian.Uint64(b[8:]))}, nil
}

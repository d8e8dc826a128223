package files

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// timerfd: clock, settime flags, period, time left and the expirations
// not read yet.
var timerfdKind = Kind{
	Name:    "timerfd",
	Type:    fdinfo.FdTypes_TIMERFD,
	Dump:    func() dumper { return timerfdDump{} },
	Restore: func() opener { return timerfdOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		t := f.GetTfd()
		return Description{Path: fmt.Sprintf("anon_inode:[timerfd] clock %d, %d.%09d s left, every %d.%09d s, %d ticks",
			t.GetClockid(), t.GetVsec(), t.GetVnsec(), t.GetIsec(), t.GetInsec(), t.GetTicks())}
	},
}

type timerfdDump struct{}

func (timerfdDump) match(fd *Fd) bool { return fd.Link == "anon_inode:[timerfd]" }

// dump records a timerfd: clock, settime flags, period, the time
// left until the next expiration and the expirations not read yet.
//
// fdinfo alone under-reports a periodic timer that expired: the kernel
// counts one tick when it fires and leaves the timer unarmed, adding the
// periods missed since (and re-arming) only on read or timerfd_gettime
// (fs/timerfd.c). timerfd_gettime on cryo's copy of the file does that
// catch-up, which the program could not tell from its own next read, and
// fdinfo then shows every tick and the real time left. The timer keeps
// running while the process is frozen, so it may fire again between the
// two: read until a snapshot shows an armed periodic timer.
//
// it_value is relative whatever the settime flags: restore re-arms
// TFD_TIMER_ABSTIME timers at "now + time left" (see restore).
func (timerfdDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	cp, err := fd.Copy()
	if err != nil {
		return 0, err
	}
	var t *procfs.Timerfd
	for try := 0; ; try++ {
		var cur unix.ItimerSpec
		if err := unix.TimerfdGettime(cp, &cur); err != nil {
			return 0, fmt.Errorf("timerfd_gettime: %w", err)
		}
		info, err := procfs.FdinfoPid(fd.Pid, fd.Num)
		if err != nil {
			return 0, err
		}
		if t = info.Timerfd; t == nil {
			return 0, fmt.Errorf("fdinfo has no timerfd lines")
		}
		expiredUnarmed := t.Value == (procfs.Timespec{}) && t.Interval != (procfs.Timespec{})
		if !expiredUnarmed {
			break
		}
		if try == 100 {
			return 0, fmt.Errorf("periodic timer (%d.%09d s) keeps expiring while being read", t.Interval.Sec, t.Interval.Nsec)
		}
	}
	return d.Add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_TIMERFD.Enum(),
		Tfd: &timerfd.TimerfdEntry{
			Flags: proto.Uint32(fd.Flags), Fown: noOwner(),
			Clockid: proto.Uint32(uint32(t.ClockID)), Ticks: proto.Uint64(t.Ticks),
			SettimeFlags: proto.Uint32(t.SettimeFlags),
			Vsec:         proto.Uint64(t.Value.Sec), Vnsec: proto.Uint64(t.Value.Nsec),
			Isec: proto.Uint64(t.Interval.Sec), Insec: proto.Uint64(t.Interval.Nsec),
		},
	}), nil
}

type timerfdOpen struct{}

const nsecPerSec = 1_000_000_000

// open re-creates a timerfd: same clock and flags, armed with the
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
func (timerfdOpen) open(_ *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	t := f.GetTfd()
	if t.GetVnsec() >= nsecPerSec || t.GetInsec() >= nsecPerSec || t.GetVsec() > 1<<62 || t.GetIsec() > 1<<62 {
		return 0, corrupt("timerfd (file %d): bad time (%d, %d) / (%d, %d)", f.GetId(), t.GetVsec(), t.GetVnsec(), t.GetIsec(), t.GetInsec())
	}
	clock := uint64(t.GetClockid())
	flags := uint64(unix.TFD_CLOEXEC)
	if t.GetFlags()&unix.O_NONBLOCK != 0 {
		flags |= unix.TFD_NONBLOCK
	}
	fd, err := p.Call("timerfd_create", unix.SYS_TIMERFD_CREATE, clock, flags)
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
		now, err := clockNow(p, clock)
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
	a, err := p.Arg(kabi.Bytes(&spec))
	if err != nil {
		return 0, err
	}
	if _, err := p.Call("timerfd_settime", unix.SYS_TIMERFD_SETTIME, fd, uint64(t.GetSettimeFlags()), a, 0); err != nil {
		return 0, err
	}
	if n := t.GetTicks(); n != 0 {
		if err := feature.TimerfdTicks.Check(); err != nil {
			return 0, fmt.Errorf("timerfd with %d unread expirations: %w", n, err)
		}
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		a, err := p.Arg(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := p.Call("ioctl(TFD_IOC_SET_TICKS)", unix.SYS_IOCTL, fd, kabi.TFD_IOC_SET_TICKS, a); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// clockNow reads clock in the process being restored (its time namespace
// is the one its timers live in).
func clockNow(p Proc, clock uint64) (unix.Timespec, error) {
	a, err := p.Arg(make([]byte, 16))
	if err != nil {
		return unix.Timespec{}, err
	}
	if _, err := p.Call("clock_gettime", unix.SYS_CLOCK_GETTIME, clock, a); err != nil {
		return unix.Timespec{}, err
	}
	b, err := p.Out(a, 16)
	if err != nil {
		return unix.Timespec{}, err
	}
	return unix.Timespec{Sec: int64(binary.LittleEndian.Uint64(b)), Nsec: int64(binary.LittleEndian.Uint64(b[8:]))}, nil
}

package dump

import (
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"

	"github.com/cryo-project/cryo/internal/procfs"
)

// dumpTimerfd records a timerfd: clock, settime flags, period, the time
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
func dumpTimerfd(e *fdEnv) (uint32, error) {
	fd, err := e.grabFd()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var t *procfs.Timerfd
	for try := 0; ; try++ {
		var cur unix.ItimerSpec
		if err := unix.TimerfdGettime(fd, &cur); err != nil {
			return 0, fmt.Errorf("timerfd_gettime: %w", err)
		}
		info, err := procfs.FdinfoPid(e.p.pid, e.fd)
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
	return e.p.files.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_TIMERFD.Enum(),
		Tfd: &timerfd.TimerfdEntry{
			Flags: proto.Uint32(e.flags), Fown: noOwner(),
			Clockid: proto.Uint32(uint32(t.ClockID)), Ticks: proto.Uint64(t.Ticks),
			SettimeFlags: proto.Uint32(t.SettimeFlags),
			Vsec:         proto.Uint64(t.Value.Sec), Vnsec: proto.Uint64(t.Value.Nsec),
			Isec: proto.Uint64(t.Interval.Sec), Insec: proto.Uint64(t.Interval.Nsec),
		},
	}), nil
}

package feature

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// probeTimerfdTicks sets the pending expirations of a timerfd of cryo's own
// with TFD_IOC_SET_TICKS and reads them back: what restore does for a
// timerfd whose ticks the program had not read.
func probeTimerfdTicks() (string, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return "", classify("timerfd_create", err, "", unix.ENOSYS)
	}
	defer unix.Close(fd)
	if err := kabi.IoctlPtr(fd, kabi.TFD_IOC_SET_TICKS, &[1]uint64{3}); err != nil {
		// Without CONFIG_CHECKPOINT_RESTORE the ioctl does not exist.
		return "", classify("ioctl(TFD_IOC_SET_TICKS)", err, "", unix.ENOTTY, unix.EINVAL)
	}
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		return "", fmt.Errorf("read the timerfd: %w", err)
	}
	if n := binary.NativeEndian.Uint64(b[:]); n != 3 {
		return "", fmt.Errorf("TFD_IOC_SET_TICKS 3, then read %d ticks", n)
	}
	return "", nil
}

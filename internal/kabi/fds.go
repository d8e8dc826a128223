package kabi

// TFD_IOC_SET_TICKS is _IOW('T', 0, __u64) (include/uapi/linux/timerfd.h):
// it sets the number of expirations a timerfd reports on its next read. The
// kernel has it only with CONFIG_CHECKPOINT_RESTORE; without, the ioctl
// fails with ENOTTY.
const TFD_IOC_SET_TICKS = 1<<30 | 8<<16 | 'T'<<8 // nr 0

// FIONREAD (asm-generic/ioctls.h) asks a file how many bytes a read would
// return now; an inotify fd answers with the size of its queued events.
const FIONREAD = 0x541B

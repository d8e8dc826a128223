package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCP repair (include/uapi/linux/tcp.h): a socket in repair mode
// (TCP_REPAIR, CAP_NET_ADMIN) sends nothing of its own, lets its queues be
// read and written as they are, and lets its sequence numbers, options and
// window be set before and after a connect that only makes it ESTABLISHED.

// TCP_REPAIR_QUEUE values: which queue TCP_QUEUE_SEQ, recv and send act on.
const (
	TCP_NO_QUEUE   = 0
	TCP_RECV_QUEUE = 1
	TCP_SEND_QUEUE = 2
)

// TCP_QUEUE_SEQ is the sequence number of the queue TCP_REPAIR_QUEUE
// chose: its end (write_seq, rcv_nxt) when read, its start when set.
const TCP_QUEUE_SEQ = 21

// TCP options TCP_REPAIR_OPTIONS takes (tcp_repair_opt.opt_code).
const (
	TCPOPT_MAXSEG    = 2
	TCPOPT_WINDOW    = 3 // opt_val: snd_wscale | rcv_wscale << 16
	TCPOPT_SACK_PERM = 4
	TCPOPT_TIMESTAMP = 8
)

// TCPRepairWindow is struct tcp_repair_window (TCP_REPAIR_WINDOW, 4.8).
type TCPRepairWindow struct {
	SndWl1    uint32
	SndWnd    uint32
	MaxWindow uint32
	RcvWnd    uint32
	RcvWup    uint32
}

// GetTCPRepairWindow reads the window of socket fd, which must be in
// repair mode.
func GetTCPRepairWindow(fd int) (TCPRepairWindow, error) {
	var w TCPRepairWindow
	l := uint32(unsafe.Sizeof(w))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(&w)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return w, e
	}
	if l != uint32(unsafe.Sizeof(w)) {
		return w, unix.EINVAL
	}
	return w, nil
}

// SetTCPRepairWindow sets the window of socket fd, in repair mode and
// ESTABLISHED.
func SetTCPRepairWindow(fd int, w *TCPRepairWindow) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(w)), unsafe.Sizeof(*w), 0)
	if e != 0 {
		return e
	}
	return nil
}

// GetTCPInfo reads TCP_INFO of socket fd into TCPInfo, which, unlike
// x/sys's, keeps the window scales.
func GetTCPInfo(fd int) (*TCPInfo, error) {
	var ti TCPInfo
	l := uint32(unsafe.Sizeof(ti))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&ti)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return nil, e
	}
	return &ti, nil
}

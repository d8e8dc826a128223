package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// NETLINK_SOCK_DIAG for AF_UNIX (include/uapi/linux/unix_diag.h): one
// request dumps every unix socket of the network namespace, each as a
// UnixDiagMsg followed by netlink attributes.

// udiag_show bits: which attributes the kernel adds to each socket.
const (
	UDIAG_SHOW_NAME    = 0x01 // UNIX_DIAG_NAME: the bound address
	UDIAG_SHOW_VFS     = 0x02 // UNIX_DIAG_VFS: inode of the socket file
	UDIAG_SHOW_PEER    = 0x04 // UNIX_DIAG_PEER: inode of the peer
	UDIAG_SHOW_ICONS   = 0x08 // UNIX_DIAG_ICONS: a listener's pending connections
	UDIAG_SHOW_RQLEN   = 0x10 // UNIX_DIAG_RQLEN: queue lengths
	UDIAG_SHOW_MEMINFO = 0x20
	UDIAG_SHOW_UID     = 0x40
)

// Attribute types of a unix_diag_msg. UNIX_DIAG_SHUTDOWN comes without
// being asked for.
const (
	UNIX_DIAG_NAME = iota
	UNIX_DIAG_VFS
	UNIX_DIAG_PEER
	UNIX_DIAG_ICONS
	UNIX_DIAG_RQLEN
	UNIX_DIAG_MEMINFO
	UNIX_DIAG_SHUTDOWN
	UNIX_DIAG_UID
)

// UnixDiagReq is struct unix_diag_req (24 bytes).
type UnixDiagReq struct {
	Family   uint8
	Protocol uint8
	Pad      uint16
	States   uint32
	Ino      uint32
	Show     uint32
	Cookie   [2]uint32
}

// UnixDiagMsgSize is sizeof(struct unix_diag_msg): family, type, state,
// pad (u8 each), ino (u32), cookie (2 × u32).
const UnixDiagMsgSize = 16

// NlmsghdrSize is sizeof(struct nlmsghdr).
const NlmsghdrSize = 16

// Socket states as sock_diag reports them for unix sockets
// (include/net/tcp_states.h): af_unix borrows three of TCP's.
const (
	TCP_ESTABLISHED = 1
	TCP_CLOSE       = 7
	TCP_LISTEN      = 10
)

// UnixDiagMsg is struct unix_diag_msg.
type UnixDiagMsg struct {
	Family uint8
	Type   uint8
	State  uint8
	Pad    uint8
	Ino    uint32
	Cookie [2]uint32
}

// SocketFilterLen returns the number of instructions of the classic BPF
// program attached to socket fd (SO_ATTACH_FILTER), 0 if none. It asks
// with an empty buffer: the kernel takes SO_GET_FILTER's optlen as a count
// of instructions, not bytes, and a buffer sized for an int would be
// overrun by any filter of two or more. An eBPF program (SO_ATTACH_BPF)
// fails with EACCES.
func SocketFilterLen(fd int) (int, error) {
	var n uint32
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0, uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// PeerNameRaw is getpeername(2) of a UNIX socket: the sun_path bytes of
// its peer's address as the kernel gives them, by its length (empty for
// an unnamed peer, a leading NUL for an abstract name), which
// unix.Getpeername cannot tell apart.
func PeerNameRaw(fd int) ([]byte, error) {
	var sa unix.RawSockaddrUnix
	n := uint32(unsafe.Sizeof(sa))
	if _, _, e := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n))); e != 0 {
		return nil, e
	}
	const pathOff = 2 // after sun_family
	if n <= pathOff {
		return []byte{}, nil
	}
	n = min(n, uint32(unsafe.Sizeof(sa)))
	out := make([]byte, n-pathOff)
	for i := range out {
		out[i] = byte(sa.Path[i])
	}
	return out, nil
}

// IPV6_FLOWINFO (linux/in6.h), which x/sys lacks: whether a socket gets
// the flow label of each datagram it receives (IPV6_FLOWINFO cmsg).
const IPV6_FLOWINFO = 11

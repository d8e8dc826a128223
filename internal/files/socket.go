package files

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// Sockets. Every socket family is a kind of its own (each has its own
// fd_types in CRIU's image: UNIXSK, INETSK, PACKETSK, NETLINKSK): its
// matcher asks the socket's family and type, which only the socket itself
// can tell (SO_DOMAIN and SO_TYPE on cryo's copy of it). A socket of a
// family no kind handles is refused naming family and type.

// sockAddr is a socket's family and type, read once per fd.
type sockAddr struct {
	family, typ int
}

// socket returns fd's family and type; ok is false for an fd that is not
// a socket, or that cannot be asked.
func (fd *Fd) socket() (sockAddr, bool) {
	if fd.Stat.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return sockAddr{}, false
	}
	if fd.sock != nil {
		return *fd.sock, true
	}
	cp, err := fd.Copy()
	if err != nil {
		return sockAddr{}, false
	}
	family, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return sockAddr{}, false
	}
	typ, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return sockAddr{}, false
	}
	fd.sock = &sockAddr{family, typ}
	return *fd.sock, true
}

var sockTypes = map[int]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket", unix.SOCK_RAW: "raw", unix.SOCK_RDM: "rdm", unix.SOCK_PACKET: "packet"}

var sockFamilies = map[int]string{unix.AF_UNIX: "unix", unix.AF_INET: "inet", unix.AF_INET6: "inet6", unix.AF_NETLINK: "netlink", unix.AF_PACKET: "packet", unix.AF_VSOCK: "vsock", unix.AF_ALG: "alg", unix.AF_BLUETOOTH: "bluetooth", unix.AF_XDP: "xdp"}

// socketKind names fd's family and type ("inet stream"), for refusals.
func socketKind(fd *Fd) string {
	a, ok := fd.socket()
	if !ok {
		return "unknown"
	}
	return sockKind(a.family, a.typ)
}

func sockKind(family, typ int) string {
	f, ok := sockFamilies[family]
	if !ok {
		f = "family " + strconv.Itoa(family)
	}
	t, ok := sockTypes[typ]
	if !ok {
		t = "type " + strconv.Itoa(typ)
	}
	return f + " " + t
}

package files

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	skopts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
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

// setBufSize sets a buffer size the image holds as the kernel reports it,
// doubled: half goes back, through the FORCE variant (past
// net.core.[rw]mem_max, as the program may have gone with CAP_NET_ADMIN)
// or, without the privilege, the plain one.
func setBufSize(fd, force, plain int, val uint32) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, int(val/2))
	if errors.Is(err, unix.EPERM) {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, int(val/2))
	}
	if err != nil {
		return fmt.Errorf("setsockopt %d: %w", plain, err)
	}
	return nil
}

// setTimeouts puts back SO_SNDTIMEO and SO_RCVTIMEO, where set.
func setTimeouts(fd int, o *skopts.SkOptsEntry) error {
	for _, v := range []struct {
		opt      int
		sec, usc uint64
	}{{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec()}, {unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec()}} {
		if v.sec == 0 && v.usc == 0 {
			continue
		}
		tv := unix.Timeval{Sec: int64(v.sec), Usec: int64(v.usc)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, v.opt, &tv); err != nil {
			return fmt.Errorf("setsockopt %d: %w", v.opt, err)
		}
	}
	return nil
}

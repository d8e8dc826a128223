package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// unixDiag is what sock_diag says about one unix socket.
type unixDiag struct {
	ino      uint32
	typ      uint8 // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	state    uint8 // kabi.TCP_LISTEN, TCP_ESTABLISHED or TCP_CLOSE
	name     []byte
	hasName  bool
	vfsIno   uint32 // inode of the socket file of a path name
	vfsDev   uint32
	hasVfs   bool
	peer     uint32 // inode of the peer; 0 if none or not a socket with a file
	icons    []uint32
	rqlen    uint32 // listener: connections waiting; others: bytes (stream) or first datagram
	wqlen    uint32 // listener: backlog; others: bytes sent not yet read by the peer
	shutdown uint8
}

// errDiagMalformed marks a sock_diag answer that does not parse.
var errDiagMalformed = errors.New("malformed sock_diag message")

// maxDiagIcons bounds one listener's pending connections as parsed (the
// kernel caps a backlog at somaxconn, 4096 by default).
const maxDiagIcons = 1 << 16

// unixSockets dumps every unix socket of cryo's network namespace, by
// inode. cryo and the dumped tree must share it (sockets of another
// namespace are not listed, and their fds fail the dump as not found).
func unixSockets() (map[uint32]*unixDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	req := kabi.UnixDiagReq{
		Family: unix.AF_UNIX,
		States: ^uint32(0),
		Show: kabi.UDIAG_SHOW_NAME | kabi.UDIAG_SHOW_VFS | kabi.UDIAG_SHOW_PEER |
			kabi.UDIAG_SHOW_ICONS | kabi.UDIAG_SHOW_RQLEN,
	}
	body := kabi.Bytes(&req)
	msg := make([]byte, kabi.NlmsghdrSize+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	copy(msg[kabi.NlmsghdrSize:], body)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	out := map[uint32]*unixDiag{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		done, err := parseUnixDiag(buf[:n], out)
		if err != nil {
			return nil, err
		}
		if done {
			return out, nil
		}
	}
}

// parseUnixDiag adds the sockets of one netlink datagram to out and says
// whether it ended the dump (NLMSG_DONE).
func parseUnixDiag(b []byte, out map[uint32]*unixDiag) (bool, error) {
	for off := 0; off < len(b); {
		if len(b)-off < kabi.NlmsghdrSize {
			return false, fmt.Errorf("%w: %d bytes left at offset %d, short of a header", errDiagMalformed, len(b)-off, off)
		}
		l := int(binary.NativeEndian.Uint32(b[off:]))
		typ := binary.NativeEndian.Uint16(b[off+4:])
		if l < kabi.NlmsghdrSize || l > len(b)-off {
			return false, fmt.Errorf("%w: message of %d bytes at offset %d", errDiagMalformed, l, off)
		}
		m := b[off+kabi.NlmsghdrSize : off+l]
		switch typ {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m)); e < 0 {
					return false, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
				}
			}
			return false, fmt.Errorf("%w: error message at offset %d", errDiagMalformed, off)
		case unix.SOCK_DIAG_BY_FAMILY:
			d, err := parseUnixDiagMsg(m)
			if err != nil {
				return false, fmt.Errorf("message at offset %d: %w", off, err)
			}
			out[d.ino] = d
		}
		off += (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
	}
	return false, nil
}

func parseUnixDiagMsg(m []byte) (*unixDiag, error) {
	if len(m) < kabi.UnixDiagMsgSize {
		return nil, fmt.Errorf("%w: unix_diag_msg of %d bytes", errDiagMalformed, len(m))
	}
	d := &unixDiag{typ: m[1], state: m[2], ino: binary.NativeEndian.Uint32(m[4:])}
	for a := m[kabi.UnixDiagMsgSize:]; len(a) > 0; {
		if len(a) < 4 {
			return nil, fmt.Errorf("%w: %d bytes of attribute header", errDiagMalformed, len(a))
		}
		l := int(binary.NativeEndian.Uint16(a))
		typ := binary.NativeEndian.Uint16(a[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(a) {
			return nil, fmt.Errorf("%w: attribute %d of %d bytes in %d", errDiagMalformed, typ, l, len(a))
		}
		v := a[4:l]
		short := func(n int) error {
			if len(v) < n {
				return fmt.Errorf("%w: attribute %d of socket %d has %d bytes, want %d", errDiagMalformed, typ, d.ino, len(v), n)
			}
			return nil
		}
		switch typ {
		case kabi.UNIX_DIAG_NAME:
			d.name, d.hasName = append([]byte(nil), v...), true
		case kabi.UNIX_DIAG_VFS:
			if err := short(8); err != nil {
				return nil, err
			}
			d.vfsIno, d.vfsDev, d.hasVfs = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:]), true
		case kabi.UNIX_DIAG_PEER:
			if err := short(4); err != nil {
				return nil, err
			}
			d.peer = binary.NativeEndian.Uint32(v)
		case kabi.UNIX_DIAG_ICONS:
			if len(v)%4 != 0 || len(v)/4 > maxDiagIcons {
				return nil, fmt.Errorf("%w: %d bytes of pending connections", errDiagMalformed, len(v))
			}
			d.icons = make([]uint32, len(v)/4)
			for i := range d.icons {
				d.icons[i] = binary.NativeEndian.Uint32(v[i*4:])
			}
		case kabi.UNIX_DIAG_RQLEN:
			if err := short(8); err != nil {
				return nil, err
			}
			d.rqlen, d.wqlen = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:])
		case kabi.UNIX_DIAG_SHUTDOWN:
			if err := short(1); err != nil {
				return nil, err
			}
			d.shutdown = v[0]
		}
		a = a[min((l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(a)):]
	}
	return d, nil
}

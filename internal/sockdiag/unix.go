package sockdiag

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Unix is what unix_diag says about one unix socket.
type Unix struct {
	Inode  uint32
	Type   uint8 // SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET
	State  uint8 // kabi.TCP_LISTEN, TCP_ESTABLISHED or TCP_CLOSE: af_unix borrows three of TCP's states
	Cookie uint64

	// Name is the bound address (UNIX_DIAG_NAME) as the kernel keeps it:
	// a path name ends with its NUL, an abstract name starts with one.
	// Nil for a socket that is not bound.
	Name []byte
	// VFSIno and VFSDev are the inode and device of the socket file a
	// path name created (UNIX_DIAG_VFS); HasVFS says the kernel sent them,
	// which it does for sockets bound to a path only.
	VFSIno, VFSDev uint32
	HasVFS         bool
	// Peer is the inode of the peer (UNIX_DIAG_PEER), or 0. A client
	// waiting in a listener's backlog is connected to an "embryo" socket,
	// which has no inode: its Peer reads 0.
	Peer uint32
	// Icons are the inodes of the client sockets of the connections
	// waiting in a listener's backlog (UNIX_DIAG_ICONS), in the order
	// accept() would take them; 0 for a client since closed. Nil for a
	// socket that does not listen. At most MaxIcons.
	Icons []uint32
	// RQLen and WQLen (UNIX_DIAG_RQLEN): for a listener, the connections
	// waiting and the backlog it was given; otherwise the bytes queued for
	// reading (a datagram socket: the first datagram's) and the memory
	// held by what it sent and its peer has not read.
	RQLen, WQLen uint32
	// Shutdown is the socket's shutdown state (UNIX_DIAG_SHUTDOWN, sent
	// unasked): RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2).
	Shutdown uint8
	// UID is the owner's uid (UNIX_DIAG_UID, Linux 5.3) in the user
	// namespace of the asking socket; HasUID says the kernel sent it.
	UID    uint32
	HasUID bool
	// MemInfo is the socket's memory accounting (UNIX_DIAG_MEMINFO), or
	// nil.
	MemInfo *MemInfo
}

// unixShow asks for every attribute unix_diag has. Bits an older kernel
// does not know are ignored by it.
const unixShow = kabi.UDIAG_SHOW_NAME | kabi.UDIAG_SHOW_VFS | kabi.UDIAG_SHOW_PEER |
	kabi.UDIAG_SHOW_ICONS | kabi.UDIAG_SHOW_RQLEN | kabi.UDIAG_SHOW_MEMINFO | kabi.UDIAG_SHOW_UID

// Unix dumps every unix socket of the Conn's network namespace.
func (c *Conn) Unix() ([]Unix, error) {
	req := kabi.UnixDiagReq{Family: unix.AF_UNIX, States: ^uint32(0), Show: unixShow}
	var out []Unix
	err := c.dump(kabi.Bytes(&req), func(off int64, m []byte) error {
		u, err := parseUnixMsg(off, m)
		if err == nil {
			out = append(out, u)
		}
		return err
	})
	return out, err
}

// UnixSockets dumps every unix socket of network namespace netns (nil:
// cryo's own), indexed by inode.
func UnixSockets(netns *os.File) (map[uint32]*Unix, error) {
	return withConn(netns, func(c *Conn) (map[uint32]*Unix, error) {
		s, err := c.Unix()
		if err != nil {
			return nil, err
		}
		return byInode(s, func(u *Unix) uint32 { return u.Inode }), nil
	})
}

// ParseUnix parses a whole unix_diag reply: the datagrams of one dump,
// concatenated, ending with NLMSG_DONE. It does no I/O.
func ParseUnix(b []byte) ([]Unix, error) { return parseReply(b, parseUnixMsg) }

// maxUnixName is sizeof(sun_path): the kernel sends the address without
// its sun_family.
const maxUnixName = 108

func parseUnixMsg(off int64, m []byte) (Unix, error) {
	if err := header(off, "unix_diag_msg", m, kabi.UnixDiagMsgSize, unix.AF_UNIX); err != nil {
		return Unix{}, err
	}
	h := kabi.FromBytes[kabi.UnixDiagMsg](m)
	u := Unix{Inode: h.Ino, Type: h.Type, State: h.State, Cookie: cookie(h.Cookie)}
	const what = "unix_diag"
	err := attrs(off+kabi.UnixDiagMsgSize, m[kabi.UnixDiagMsgSize:], func(off int64, typ uint16, v []byte) error {
		switch typ {
		case kabi.UNIX_DIAG_NAME:
			if len(v) > maxUnixName {
				return attrError(off, what, typ, u.Inode, "a name of %d bytes, more than sun_path holds", len(v))
			}
			u.Name = append(make([]byte, 0, len(v)), v...)
		case kabi.UNIX_DIAG_VFS:
			if err := fixed(off, what, typ, u.Inode, v, 8); err != nil {
				return err
			}
			u.VFSIno, u.VFSDev, u.HasVFS = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:]), true
		case kabi.UNIX_DIAG_PEER:
			if err := fixed(off, what, typ, u.Inode, v, 4); err != nil {
				return err
			}
			u.Peer = binary.NativeEndian.Uint32(v)
		case kabi.UNIX_DIAG_ICONS:
			if len(v)%4 != 0 || len(v)/4 > MaxIcons {
				return attrError(off, what, typ, u.Inode, "%d bytes of pending connections", len(v))
			}
			u.Icons = make([]uint32, len(v)/4)
			for i := range u.Icons {
				u.Icons[i] = binary.NativeEndian.Uint32(v[i*4:])
			}
		case kabi.UNIX_DIAG_RQLEN:
			if err := fixed(off, what, typ, u.Inode, v, 8); err != nil {
				return err
			}
			u.RQLen, u.WQLen = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:])
		case kabi.UNIX_DIAG_SHUTDOWN:
			if err := fixed(off, what, typ, u.Inode, v, 1); err != nil {
				return err
			}
			u.Shutdown = v[0]
		case kabi.UNIX_DIAG_UID:
			if err := fixed(off, what, typ, u.Inode, v, 4); err != nil {
				return err
			}
			u.UID, u.HasUID = binary.NativeEndian.Uint32(v), true
		case kabi.UNIX_DIAG_MEMINFO:
			mi, err := parseMemInfo(off, what, typ, u.Inode, v)
			if err != nil {
				return err
			}
			u.MemInfo = mi
		}
		return nil
	})
	return u, err
}

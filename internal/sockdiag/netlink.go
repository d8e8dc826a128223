package sockdiag

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Netlink is what netlink_diag says about one AF_NETLINK socket.
//
// The kernel lists the sockets that are bound (explicitly, or by their
// first send or connect) or members of a multicast group; a netlink
// socket just created is not listed. The kernel's own sockets are listed
// too, with port id 0.
type Netlink struct {
	Type     uint8 // SOCK_RAW or SOCK_DGRAM
	Protocol uint8 // NETLINK_ROUTE, NETLINK_GENERIC...
	// State is kabi.NETLINK_CONNECTED once connect() set a default
	// destination, NETLINK_UNCONNECTED after a connect to AF_UNSPEC, and
	// kabi.TCP_CLOSE (7) before any connect: sock_init_data leaves every
	// new socket in that state and netlink never changes it.
	State uint8
	// PortID is the socket's own address; DstPortID and DstGroup the
	// destination connect() gave it.
	PortID, DstPortID, DstGroup uint32
	Inode                       uint32
	Cookie                      uint64

	// Groups is the multicast group membership bitmap
	// (NETLINK_DIAG_GROUPS) as u32 words: group g (from 1) is bit (g-1)%32
	// of word (g-1)/32. The kernel writes its unsigned long bitmap, whose
	// bytes on little-endian x86_64 are these words. Nil when the kernel
	// sent no bitmap: it has one only for a socket that bound or joined
	// a group, or a kernel socket (possibly of 0 words).
	Groups []uint32
	// Flags are NDIAG_FLAG_* (NETLINK_DIAG_FLAGS, Linux 4.10); HasFlags
	// says the kernel sent them.
	Flags    uint32
	HasFlags bool
	// MemInfo is NETLINK_DIAG_MEMINFO, or nil.
	MemInfo *MemInfo
}

// Member says whether the socket is in multicast group g (from 1).
func (n *Netlink) Member(g uint32) bool {
	if g == 0 || (g-1)/32 >= uint32(len(n.Groups)) {
		return false
	}
	return n.Groups[(g-1)/32]&(1<<((g-1)%32)) != 0
}

const netlinkShow = kabi.NDIAG_SHOW_MEMINFO | kabi.NDIAG_SHOW_GROUPS | kabi.NDIAG_SHOW_FLAGS

// Netlink dumps every netlink socket, of every netlink protocol, of the
// Conn's network namespace.
func (c *Conn) Netlink() ([]Netlink, error) {
	req := kabi.NetlinkDiagReq{Family: unix.AF_NETLINK, Protocol: kabi.NDIAG_PROTO_ALL, Show: netlinkShow}
	var out []Netlink
	err := c.dump(kabi.Bytes(&req), func(off int64, m []byte) error {
		n, err := parseNetlinkMsg(off, m)
		if err == nil {
			out = append(out, n)
		}
		return err
	})
	return out, err
}

// NetlinkSockets dumps every netlink socket of network namespace netns
// (nil: cryo's own), indexed by inode.
func NetlinkSockets(netns *os.File) (map[uint32]*Netlink, error) {
	return withConn(netns, func(c *Conn) (map[uint32]*Netlink, error) {
		s, err := c.Netlink()
		if err != nil {
			return nil, err
		}
		return byInode(s, func(n *Netlink) uint32 { return n.Inode }), nil
	})
}

// ParseNetlink parses a whole netlink_diag reply: the datagrams of one
// dump, concatenated, ending with NLMSG_DONE. It does no I/O.
func ParseNetlink(b []byte) ([]Netlink, error) { return parseReply(b, parseNetlinkMsg) }

const netlinkDiagMsgSize = 28

func parseNetlinkMsg(off int64, m []byte) (Netlink, error) {
	if err := header(off, "netlink_diag_msg", m, netlinkDiagMsgSize, unix.AF_NETLINK); err != nil {
		return Netlink{}, err
	}
	h := kabi.FromBytes[kabi.NetlinkDiagMsg](m)
	n := Netlink{
		Type: h.Type, Protocol: h.Protocol, State: h.State,
		PortID: h.Portid, DstPortID: h.DstPortid, DstGroup: h.DstGroup,
		Inode: h.Ino, Cookie: cookie(h.Cookie),
	}
	const what = "netlink_diag"
	err := attrs(off+netlinkDiagMsgSize, m[netlinkDiagMsgSize:], func(off int64, typ uint16, v []byte) error {
		switch typ {
		case kabi.NETLINK_DIAG_GROUPS:
			if len(v)%4 != 0 {
				return attrError(off, what, typ, n.Inode, "a group bitmap of %d bytes", len(v))
			}
			n.Groups = make([]uint32, len(v)/4)
			for i := range n.Groups {
				n.Groups[i] = binary.NativeEndian.Uint32(v[4*i:])
			}
		case kabi.NETLINK_DIAG_FLAGS:
			if err := fixed(off, what, typ, n.Inode, v, 4); err != nil {
				return err
			}
			n.Flags, n.HasFlags = binary.NativeEndian.Uint32(v), true
		case kabi.NETLINK_DIAG_MEMINFO:
			mi, err := parseMemInfo(off, what, typ, n.Inode, v)
			if err != nil {
				return err
			}
			n.MemInfo = mi
		}
		return nil
	})
	return n, err
}

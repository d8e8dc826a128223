package sockdiag

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Packet is what packet_diag says about one AF_PACKET socket.
type Packet struct {
	Type     uint8  // SOCK_RAW, SOCK_DGRAM or SOCK_PACKET
	Protocol uint16 // the ethertype it receives (ETH_P_ALL is 3), host byte order; 0: none
	Inode    uint32
	Cookie   uint64

	// Info is PACKET_DIAG_INFO: bound interface, TPACKET version,
	// reserve, copy threshold, timestamp source, PDI_* flags.
	Info *kabi.PacketDiagInfo
	// UID is the owner's uid (PACKET_DIAG_UID) in the user namespace of
	// the asking socket; HasUID says the kernel sent it.
	UID    uint32
	HasUID bool
	// Mclist is the socket's memberships (PACKET_ADD_MEMBERSHIP:
	// PACKET_DIAG_MCLIST), in the kernel's list order. Nil if none.
	Mclist []kabi.PacketDiagMclist
	// RxRing and TxRing are the PACKET_RX_RING and PACKET_TX_RING
	// configuration, or nil when there is no such ring.
	RxRing, TxRing *kabi.PacketDiagRing
	// Fanout is the socket's fanout group as setsockopt(PACKET_FANOUT)
	// takes it (PACKET_DIAG_FANOUT): the group id in the low 16 bits, the
	// PACKET_FANOUT_* mode in bits 16-23. The kernel does not report the
	// mode's flags (ROLLOVER, DEFRAG...). HasFanout: the socket is in a
	// group.
	Fanout    uint32
	HasFanout bool
	// MemInfo is PACKET_DIAG_MEMINFO, or nil.
	MemInfo *MemInfo
	// Filter is the classic BPF program attached with SO_ATTACH_FILTER
	// (PACKET_DIAG_FILTER), nil if none. The kernel shows it only to an
	// asking socket with CAP_NET_ADMIN: otherwise it sends an empty
	// attribute, and FilterHidden is set. An eBPF program
	// (SO_ATTACH_BPF) has no classic form and is not shown at all.
	Filter       []unix.SockFilter
	FilterHidden bool
}

// packetShow asks for every attribute packet_diag has.
const packetShow = kabi.PACKET_SHOW_INFO | kabi.PACKET_SHOW_MCLIST | kabi.PACKET_SHOW_RING_CFG |
	kabi.PACKET_SHOW_FANOUT | kabi.PACKET_SHOW_MEMINFO | kabi.PACKET_SHOW_FILTER

// Packet dumps every packet socket of the Conn's network namespace.
func (c *Conn) Packet() ([]Packet, error) {
	req := kabi.PacketDiagReq{Family: unix.AF_PACKET, Show: packetShow}
	var out []Packet
	err := c.dump(kabi.Bytes(&req), func(off int64, m []byte) error {
		p, err := parsePacketMsg(off, m)
		if err == nil {
			out = append(out, p)
		}
		return err
	})
	return out, err
}

// PacketSockets dumps every packet socket of network namespace netns
// (nil: cryo's own), indexed by inode.
func PacketSockets(netns *os.File) (map[uint32]*Packet, error) {
	return withConn(netns, func(c *Conn) (map[uint32]*Packet, error) {
		s, err := c.Packet()
		if err != nil {
			return nil, err
		}
		return byInode(s, func(p *Packet) uint32 { return p.Inode }), nil
	})
}

// ParsePacket parses a whole packet_diag reply: the datagrams of one
// dump, concatenated, ending with NLMSG_DONE. It does no I/O.
func ParsePacket(b []byte) ([]Packet, error) { return parseReply(b, parsePacketMsg) }

const (
	packetDiagMsgSize    = 16
	packetDiagInfoSize   = 24
	packetDiagMclistSize = 44
	packetDiagRingSize   = 28
	sockFilterSize       = 8
)

func parsePacketMsg(off int64, m []byte) (Packet, error) {
	if err := header(off, "packet_diag_msg", m, packetDiagMsgSize, unix.AF_PACKET); err != nil {
		return Packet{}, err
	}
	h := kabi.FromBytes[kabi.PacketDiagMsg](m)
	p := Packet{Type: h.Type, Protocol: h.Num, Inode: h.Ino, Cookie: cookie(h.Cookie)}
	const what = "packet_diag"
	err := attrs(off+packetDiagMsgSize, m[packetDiagMsgSize:], func(off int64, typ uint16, v []byte) error {
		switch typ {
		case kabi.PACKET_DIAG_INFO:
			if err := fixed(off, what, typ, p.Inode, v, packetDiagInfoSize); err != nil {
				return err
			}
			info := kabi.FromBytes[kabi.PacketDiagInfo](v)
			p.Info = &info
		case kabi.PACKET_DIAG_UID:
			if err := fixed(off, what, typ, p.Inode, v, 4); err != nil {
				return err
			}
			p.UID, p.HasUID = binary.NativeEndian.Uint32(v), true
		case kabi.PACKET_DIAG_MCLIST:
			// A nest of bare packet_diag_mclist structs, without
			// attribute headers (nla_reserve_nohdr).
			if len(v)%packetDiagMclistSize != 0 {
				return attrError(off, what, typ, p.Inode, "%d bytes, not a whole number of %d-byte memberships", len(v), packetDiagMclistSize)
			}
			if len(v) == 0 {
				return nil
			}
			p.Mclist = make([]kabi.PacketDiagMclist, len(v)/packetDiagMclistSize)
			for i := range p.Mclist {
				p.Mclist[i] = kabi.FromBytes[kabi.PacketDiagMclist](v[i*packetDiagMclistSize:])
				if a := p.Mclist[i].Alen; int(a) > len(p.Mclist[i].Addr) {
					return attrError(off, what, typ, p.Inode, "membership %d with an address of %d bytes", i, a)
				}
			}
		case kabi.PACKET_DIAG_RX_RING, kabi.PACKET_DIAG_TX_RING:
			if err := fixed(off, what, typ, p.Inode, v, packetDiagRingSize); err != nil {
				return err
			}
			r := kabi.FromBytes[kabi.PacketDiagRing](v)
			if typ == kabi.PACKET_DIAG_RX_RING {
				p.RxRing = &r
			} else {
				p.TxRing = &r
			}
		case kabi.PACKET_DIAG_FANOUT:
			if err := fixed(off, what, typ, p.Inode, v, 4); err != nil {
				return err
			}
			p.Fanout, p.HasFanout = binary.NativeEndian.Uint32(v), true
		case kabi.PACKET_DIAG_MEMINFO:
			mi, err := parseMemInfo(off, what, typ, p.Inode, v)
			if err != nil {
				return err
			}
			p.MemInfo = mi
		case kabi.PACKET_DIAG_FILTER:
			if len(v)%sockFilterSize != 0 {
				return attrError(off, what, typ, p.Inode, "%d bytes, not a whole number of %d-byte instructions", len(v), sockFilterSize)
			}
			if len(v) == 0 {
				p.FilterHidden = true
				return nil
			}
			p.Filter = make([]unix.SockFilter, len(v)/sockFilterSize)
			for i := range p.Filter {
				ins := v[i*sockFilterSize:]
				p.Filter[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(ins), Jt: ins[2], Jf: ins[3], K: binary.NativeEndian.Uint32(ins[4:])}
			}
		}
		return nil
	})
	return p, err
}

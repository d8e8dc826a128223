package sockdiag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// InetExt selects the extensions an inet dump asks for (idiag_ext). The
// kernel sends some attributes unasked: see [Inet].
type InetExt uint8

const (
	ExtMemInfo   InetExt = 1 << (kabi.INET_DIAG_MEMINFO - 1)   // Inet.MemInfo
	ExtInfo      InetExt = 1 << (kabi.INET_DIAG_INFO - 1)      // Inet.TCPInfo (TCP only)
	ExtCong      InetExt = 1 << (kabi.INET_DIAG_CONG - 1)      // Inet.Cong (TCP only)
	ExtTOS       InetExt = 1 << (kabi.INET_DIAG_TOS - 1)       // Inet.TOS
	ExtTClass    InetExt = 1 << (kabi.INET_DIAG_TCLASS - 1)    // Inet.TClass (AF_INET6) and Inet.ClassID
	ExtSkMemInfo InetExt = 1 << (kabi.INET_DIAG_SKMEMINFO - 1) // Inet.SkMemInfo

	ExtAll = ExtMemInfo | ExtInfo | ExtCong | ExtTOS | ExtTClass | ExtSkMemInfo
)

// Inet is what inet_diag says about one AF_INET or AF_INET6 socket.
//
// TCP sockets in TIME_WAIT and embryonic connections (SYN_RECV) are not
// full sockets: they have no inode and no uid, and none of the attributes.
// The kernel lists only sockets in its lookup tables: a TCP or UDP socket
// that was never bound (nor connected, which binds) is not listed.
type Inet struct {
	Family   uint8 // AF_INET or AF_INET6
	Protocol uint8 // IPPROTO_TCP, _UDP, _UDPLITE, or a raw socket's own protocol
	State    uint8 // kabi.TCP_*; UDP and raw: TCP_CLOSE, or TCP_ESTABLISHED once connected
	Timer    uint8 // TCP: which timer is pending (1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe)
	Retrans  uint8
	// Src and Dst are the local and remote address and port. An AF_INET6
	// socket's addresses stay 16 bytes, v4-mapped ones included.
	Src, Dst netip.AddrPort
	// Interface is the index of the device the socket is bound to
	// (SO_BINDTODEVICE), or 0.
	Interface uint32
	Cookie    uint64
	Expires   uint32 // ms until Timer fires
	// RQueue and WQueue: TCP: bytes received not yet read (a listener:
	// connections waiting to be accepted) and bytes sent not yet
	// acknowledged (a listener: its backlog); UDP and raw: memory held by
	// the receive and send queues.
	RQueue, WQueue uint32
	UID            uint32 // in the user namespace of the asking socket
	Inode          uint32

	// Shutdown is RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2) (INET_DIAG_SHUTDOWN,
	// sent for every full socket).
	Shutdown uint8
	// TOS (INET_DIAG_TOS, with ExtTOS) is the IPv4 type of service; an
	// AF_INET6 socket has one too, used for its IPv4 traffic.
	TOS    uint8
	HasTOS bool
	// TClass (INET_DIAG_TCLASS, AF_INET6 with ExtTClass) is the IPv6
	// traffic class.
	TClass    uint8
	HasTClass bool
	// V6Only is IPV6_V6ONLY (INET_DIAG_SKV6ONLY). The kernel sends it for
	// AF_INET6 sockets in TCP_LISTEN or TCP_CLOSE only.
	V6Only    bool
	HasV6Only bool
	// Mark is SO_MARK (INET_DIAG_MARK). The kernel sends it only to an
	// asking socket with CAP_NET_ADMIN over the namespace.
	Mark    uint32
	HasMark bool
	// ClassID (INET_DIAG_CLASS_ID, with ExtTClass) is the net_cls
	// cgroup's class id, or SO_PRIORITY when that is 0.
	ClassID    uint32
	HasClassID bool
	// CgroupID is the id of the socket's cgroup v2 (INET_DIAG_CGROUP_ID,
	// sent unasked since Linux 5.7).
	CgroupID    uint64
	HasCgroupID bool
	// SockOpt is struct inet_diag_sockopt (INET_DIAG_SOCKOPT, unasked
	// since Linux 5.10) as a little-endian bit set: recverr, is_icsk,
	// freebind, hdrincl, mc_loop, transparent, mc_all, nodefrag (bits
	// 0-7), bind_address_no_port, recverr_rfc4884, defer_connect (8-10).
	SockOpt    uint16
	HasSockOpt bool
	// Cong is the congestion control algorithm (INET_DIAG_CONG, TCP with
	// ExtCong).
	Cong string
	// MemInfo (INET_DIAG_MEMINFO, with ExtMemInfo) and SkMemInfo
	// (INET_DIAG_SKMEMINFO, with ExtSkMemInfo), or nil.
	MemInfo   *kabi.InetDiagMeminfo
	SkMemInfo *MemInfo
	// TCPInfo is INET_DIAG_INFO of a TCP socket (with ExtInfo), or nil.
	TCPInfo *TCPInfo
}

// TCPInfo is struct tcp_info as INET_DIAG_INFO carries it: the head every
// kernel fills decoded, and the whole of it, newer fields included, in
// Raw.
type TCPInfo struct {
	kabi.TCPInfo
	SndWscale, RcvWscale uint8 // the two 4-bit fields of Wscale
	Raw                  []byte
}

// Inet dumps the sockets of one family (AF_INET or AF_INET6) and
// protocol (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, or IPPROTO_RAW for
// raw sockets of any protocol) in every state, with the extensions ext.
// A protocol this kernel's sock_diag cannot dump fails with an error
// wrapping ErrNotSupported.
func (c *Conn) Inet(family, protocol uint8, ext InetExt) ([]Inet, error) {
	req := kabi.InetDiagReqV2{Family: family, Protocol: protocol, Ext: uint8(ext), States: ^uint32(0)}
	if protocol == unix.IPPROTO_RAW {
		// raw_diag dumps every raw socket whatever this says; its
		// single-socket lookup would match on it.
		req.RawProtocol = unix.IPPROTO_RAW
	}
	var out []Inet
	err := c.dump(kabi.Bytes(&req), func(off int64, m []byte) error {
		s, err := parseInetMsg(off, m, protocol)
		if err == nil {
			out = append(out, s)
		}
		return err
	})
	if errors.Is(err, unix.ENOENT) {
		// inet_diag_lock_handler: no handler registered for the
		// protocol, even after request_module.
		return nil, fmt.Errorf("inet_diag of %s: %w (%w)", inetName(family, protocol), ErrNotSupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("inet_diag of %s: %w", inetName(family, protocol), err)
	}
	return out, nil
}

// InetProtocols are the protocols InetSockets dumps.
var InetProtocols = []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE, unix.IPPROTO_RAW}

// InetSockets dumps the AF_INET and AF_INET6 sockets of every protocol of
// InetProtocols in network namespace netns (nil: cryo's own), with the
// extensions ext, indexed by inode. A protocol the kernel cannot dump
// (ErrNotSupported) is skipped: its sockets are simply not found, and
// Conn.Inet tells why.
func InetSockets(netns *os.File, ext InetExt) (map[uint32]*Inet, error) {
	return withConn(netns, func(c *Conn) (map[uint32]*Inet, error) {
		var all []Inet
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			for _, p := range InetProtocols {
				s, err := c.Inet(family, p, ext)
				if errors.Is(err, ErrNotSupported) {
					continue
				}
				if err != nil {
					return nil, err
				}
				all = append(all, s...)
			}
		}
		return byInode(all, func(s *Inet) uint32 { return s.Inode }), nil
	})
}

// ParseInet parses a whole inet_diag reply to a dump of protocol (the
// reply does not say which protocol was asked for): the datagrams of one
// dump, concatenated, ending with NLMSG_DONE. It does no I/O.
func ParseInet(b []byte, protocol uint8) ([]Inet, error) {
	return parseReply(b, func(off int64, m []byte) (Inet, error) { return parseInetMsg(off, m, protocol) })
}

func inetName(family, protocol uint8) string {
	f := fmt.Sprintf("family %d", family)
	switch family {
	case unix.AF_INET:
		f = "IPv4"
	case unix.AF_INET6:
		f = "IPv6"
	}
	p := fmt.Sprintf("protocol %d", protocol)
	switch protocol {
	case unix.IPPROTO_TCP:
		p = "TCP"
	case unix.IPPROTO_UDP:
		p = "UDP"
	case unix.IPPROTO_UDPLITE:
		p = "UDP-Lite"
	case unix.IPPROTO_RAW:
		p = "raw"
	}
	return f + " " + p
}

const inetDiagMsgSize = 72

func parseInetMsg(off int64, m []byte, protocol uint8) (Inet, error) {
	if len(m) < inetDiagMsgSize {
		return Inet{}, &ParseError{Offset: off, Err: fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(m), inetDiagMsgSize)}
	}
	h := kabi.FromBytes[kabi.InetDiagMsg](m)
	s := Inet{
		Family: h.Family, Protocol: protocol, State: h.State, Timer: h.Timer, Retrans: h.Retrans,
		Interface: h.ID.If, Cookie: cookie(h.ID.Cookie), Expires: h.Expires,
		RQueue: h.Rqueue, WQueue: h.Wqueue, UID: h.UID, Inode: h.Inode,
	}
	sport, dport := binary.BigEndian.Uint16(h.ID.Sport[:]), binary.BigEndian.Uint16(h.ID.Dport[:])
	switch h.Family {
	case unix.AF_INET:
		s.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(h.ID.Src[:4])), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(h.ID.Dst[:4])), dport)
	case unix.AF_INET6:
		s.Src = netip.AddrPortFrom(netip.AddrFrom16(h.ID.Src), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16(h.ID.Dst), dport)
	default:
		return Inet{}, &ParseError{Offset: off, Err: fmt.Errorf("inet_diag_msg of family %d", h.Family)}
	}
	const what = "inet_diag"
	err := attrs(off+inetDiagMsgSize, m[inetDiagMsgSize:], func(off int64, typ uint16, v []byte) error {
		u8 := func(dst *uint8, has *bool) error {
			if err := fixed(off, what, typ, s.Inode, v, 1); err != nil {
				return err
			}
			*dst, *has = v[0], true
			return nil
		}
		u32 := func(dst *uint32, has *bool) error {
			if err := fixed(off, what, typ, s.Inode, v, 4); err != nil {
				return err
			}
			*dst, *has = binary.NativeEndian.Uint32(v), true
			return nil
		}
		var ignored bool
		switch typ {
		case kabi.INET_DIAG_SHUTDOWN:
			return u8(&s.Shutdown, &ignored)
		case kabi.INET_DIAG_TOS:
			return u8(&s.TOS, &s.HasTOS)
		case kabi.INET_DIAG_TCLASS:
			return u8(&s.TClass, &s.HasTClass)
		case kabi.INET_DIAG_SKV6ONLY:
			var b uint8
			if err := u8(&b, &s.HasV6Only); err != nil {
				return err
			}
			s.V6Only = b != 0
		case kabi.INET_DIAG_PROTOCOL:
			// Sent for SOCK_RAW sockets: the protocol they were
			// created with, which the dump request could not say.
			return u8(&s.Protocol, &ignored)
		case kabi.INET_DIAG_MARK:
			return u32(&s.Mark, &s.HasMark)
		case kabi.INET_DIAG_CLASS_ID:
			return u32(&s.ClassID, &s.HasClassID)
		case kabi.INET_DIAG_CGROUP_ID:
			if err := fixed(off, what, typ, s.Inode, v, 8); err != nil {
				return err
			}
			s.CgroupID, s.HasCgroupID = binary.NativeEndian.Uint64(v), true
		case kabi.INET_DIAG_SOCKOPT:
			if err := fixed(off, what, typ, s.Inode, v, 2); err != nil {
				return err
			}
			s.SockOpt, s.HasSockOpt = binary.LittleEndian.Uint16(v), true
		case kabi.INET_DIAG_CONG:
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			s.Cong = string(v)
		case kabi.INET_DIAG_MEMINFO:
			if err := fixed(off, what, typ, s.Inode, v, 16); err != nil {
				return err
			}
			mi := kabi.FromBytes[kabi.InetDiagMeminfo](v)
			s.MemInfo = &mi
		case kabi.INET_DIAG_SKMEMINFO:
			mi, err := parseMemInfo(off, what, typ, s.Inode, v)
			if err != nil {
				return err
			}
			s.SkMemInfo = mi
		case kabi.INET_DIAG_INFO:
			// Another protocol's INET_DIAG_INFO is another struct
			// (mptcp_info); UDP and raw have none.
			if protocol != unix.IPPROTO_TCP {
				return nil
			}
			if err := fixed(off, what, typ, s.Inode, v, kabi.TCPInfoSize); err != nil {
				return err
			}
			ti := &TCPInfo{TCPInfo: kabi.FromBytes[kabi.TCPInfo](v), Raw: append(make([]byte, 0, len(v)), v...)}
			// The bitfields tcpi_snd_wscale:4, tcpi_rcv_wscale:4, which
			// GCC allocates from the low bit up on x86_64.
			ti.SndWscale, ti.RcvWscale = ti.Wscale&0xf, ti.Wscale>>4
			s.TCPInfo = ti
		}
		return nil
	})
	return s, err
}

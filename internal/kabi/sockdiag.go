package kabi

// NETLINK_SOCK_DIAG for AF_INET/AF_INET6 (include/uapi/linux/inet_diag.h),
// AF_PACKET (packet_diag.h) and AF_NETLINK (netlink_diag.h), and the part of
// struct tcp_info (tcp.h) that INET_DIAG_INFO carries. The AF_UNIX side is
// in sock.go. x/sys/unix has none of these request or message structs;
// its TCPInfo drops the byte holding the window scales (a C bitfield), so
// the layout is spelled out here.
//
// Every request is answered with a multi-part dump: one message per socket,
// each a fixed struct followed by netlink attributes, then NLMSG_DONE.

// InetDiagSockid is struct inet_diag_sockid (48 bytes). Ports and
// addresses are in network byte order, as the kernel stores them; an
// AF_INET address is the first 4 bytes of Src or Dst.
type InetDiagSockid struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

// InetDiagReqV2 is struct inet_diag_req_v2 (56 bytes). RawProtocol is the
// field the header calls pad; struct inet_diag_req_raw gives it that name
// for SOCK_RAW dumps (raw_diag.c ignores it when dumping all sockets).
type InetDiagReqV2 struct {
	Family      uint8
	Protocol    uint8
	Ext         uint8 // 1 << (INET_DIAG_xxx - 1) for each extension wanted
	RawProtocol uint8
	States      uint32 // 1 << TCP_xxx for each state wanted
	ID          InetDiagSockid
}

// InetDiagMsg is struct inet_diag_msg (72 bytes).
type InetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      InetDiagSockid
	Expires uint32
	Rqueue  uint32
	Wqueue  uint32
	UID     uint32
	Inode   uint32
}

// InetDiagMeminfo is struct inet_diag_meminfo (INET_DIAG_MEMINFO, 16 bytes).
type InetDiagMeminfo struct {
	Rmem, Wmem, Fmem, Tmem uint32
}

// Attribute types of an inet_diag_msg. Only the first eight can be asked
// for (idiag_ext has 8 bits); the kernel sends the others on its own:
// SHUTDOWN, CGROUP_ID and SOCKOPT for every full socket, SKV6ONLY for
// AF_INET6 sockets in TCP_LISTEN or TCP_CLOSE, MARK only when the asking
// socket has CAP_NET_ADMIN, PROTOCOL for SOCK_RAW sockets, CLASS_ID when
// TCLASS is asked for.
const (
	INET_DIAG_NONE = iota
	INET_DIAG_MEMINFO
	INET_DIAG_INFO
	INET_DIAG_VEGASINFO
	INET_DIAG_CONG
	INET_DIAG_TOS
	INET_DIAG_TCLASS
	INET_DIAG_SKMEMINFO
	INET_DIAG_SHUTDOWN
	INET_DIAG_DCTCPINFO
	INET_DIAG_PROTOCOL
	INET_DIAG_SKV6ONLY
	INET_DIAG_LOCALS
	INET_DIAG_PEERS
	INET_DIAG_PAD
	INET_DIAG_MARK
	INET_DIAG_BBRINFO
	INET_DIAG_CLASS_ID
	INET_DIAG_MD5SIG
	INET_DIAG_ULP_INFO
	INET_DIAG_SK_BPF_STORAGES
	INET_DIAG_CGROUP_ID
	INET_DIAG_SOCKOPT
)

// TCP states (include/net/tcp_states.h) that sock.go does not already
// name. inet_diag reports UDP and raw sockets in these states too: a bound
// UDP socket is TCP_CLOSE, a connected one TCP_ESTABLISHED.
const (
	TCP_SYN_SENT     = 2
	TCP_SYN_RECV     = 3
	TCP_FIN_WAIT1    = 4
	TCP_FIN_WAIT2    = 5
	TCP_TIME_WAIT    = 6
	TCP_CLOSE_WAIT   = 8
	TCP_LAST_ACK     = 9
	TCP_CLOSING      = 11
	TCP_NEW_SYN_RECV = 12
)

// TCPInfoSize is the size of TCPInfo: struct tcp_info up to and including
// tcpi_total_retrans, the part every kernel since 2.6.x fills. Newer
// kernels append fields; INET_DIAG_INFO carries the running kernel's whole
// struct.
const TCPInfoSize = 104

// TCPInfo is the first TCPInfoSize bytes of struct tcp_info.
type TCPInfo struct {
	State       uint8
	CAState     uint8
	Retransmits uint8
	Probes      uint8
	Backoff     uint8
	Options     uint8 // TCPI_OPT_*
	Wscale      uint8 // tcpi_snd_wscale:4 (low nibble), tcpi_rcv_wscale:4
	Flags       uint8 // delivery_rate_app_limited:1, fastopen_client_fail:2

	RTO    uint32
	ATO    uint32
	SndMSS uint32
	RcvMSS uint32

	Unacked uint32
	Sacked  uint32
	Lost    uint32
	Retrans uint32
	Fackets uint32

	LastDataSent uint32
	LastAckSent  uint32
	LastDataRecv uint32
	LastAckRecv  uint32

	PMTU        uint32
	RcvSsthresh uint32
	RTT         uint32
	RTTVar      uint32
	SndSsthresh uint32
	SndCwnd     uint32
	AdvMSS      uint32
	Reordering  uint32

	RcvRTT   uint32
	RcvSpace uint32

	TotalRetrans uint32
}

// tcpi_options bits.
const (
	TCPI_OPT_TIMESTAMPS = 1
	TCPI_OPT_SACK       = 2
	TCPI_OPT_WSCALE     = 4
	TCPI_OPT_ECN        = 8
	TCPI_OPT_ECN_SEEN   = 16
	TCPI_OPT_SYN_DATA   = 32
	TCPI_OPT_USEC_TS    = 64
)

// SK_MEMINFO_VARS is how many u32 sock_diag_put_meminfo writes as of
// Linux 4.x (SK_MEMINFO_RMEM_ALLOC ... SK_MEMINFO_DROPS); a newer kernel
// may write more.
const SK_MEMINFO_VARS = 9

// PacketDiagReq is struct packet_diag_req (20 bytes).
type PacketDiagReq struct {
	Family   uint8
	Protocol uint8 // must be 0: packet_diag refuses anything else
	Pad      uint16
	Ino      uint32
	Show     uint32 // PACKET_SHOW_*
	Cookie   [2]uint32
}

// pdiag_show bits.
const (
	PACKET_SHOW_INFO     = 0x01 // PACKET_DIAG_INFO and PACKET_DIAG_UID
	PACKET_SHOW_MCLIST   = 0x02
	PACKET_SHOW_RING_CFG = 0x04 // PACKET_DIAG_RX_RING, PACKET_DIAG_TX_RING
	PACKET_SHOW_FANOUT   = 0x08
	PACKET_SHOW_MEMINFO  = 0x10
	PACKET_SHOW_FILTER   = 0x20
)

// PacketDiagMsg is struct packet_diag_msg (16 bytes). Num is the
// protocol (ethertype) in host byte order: the kernel converts it.
type PacketDiagMsg struct {
	Family uint8
	Type   uint8
	Num    uint16
	Ino    uint32
	Cookie [2]uint32
}

// Attribute types of a packet_diag_msg (numbered from 0: the header says
// so, against the netlink convention).
const (
	PACKET_DIAG_INFO = iota
	PACKET_DIAG_MCLIST
	PACKET_DIAG_RX_RING
	PACKET_DIAG_TX_RING
	PACKET_DIAG_FANOUT
	PACKET_DIAG_UID
	PACKET_DIAG_MEMINFO
	PACKET_DIAG_FILTER
)

// PacketDiagInfo is struct packet_diag_info (24 bytes).
type PacketDiagInfo struct {
	Index      uint32
	Version    uint32
	Reserve    uint32
	CopyThresh uint32
	Tstamp     uint32
	Flags      uint32 // PDI_*
}

// pdi_flags bits.
const (
	PDI_RUNNING = 0x1
	PDI_AUXDATA = 0x2
	PDI_ORIGDEV = 0x4
	PDI_VNETHDR = 0x8
	PDI_LOSS    = 0x10
)

// PacketDiagMclist is struct packet_diag_mclist (44 bytes). The kernel
// writes these back to back, without attribute headers, inside
// PACKET_DIAG_MCLIST.
type PacketDiagMclist struct {
	Index uint32
	Count uint32
	Type  uint16
	Alen  uint16
	Addr  [32]byte // MAX_ADDR_LEN
}

// PacketDiagRing is struct packet_diag_ring (28 bytes).
type PacketDiagRing struct {
	BlockSize  uint32
	BlockNr    uint32
	FrameSize  uint32
	FrameNr    uint32
	RetireTmo  uint32
	SizeofPriv uint32
	Features   uint32
}

// NetlinkDiagReq is struct netlink_diag_req (20 bytes).
type NetlinkDiagReq struct {
	Family   uint8
	Protocol uint8 // NETLINK_xxx, or NDIAG_PROTO_ALL
	Pad      uint16
	Ino      uint32
	Show     uint32 // NDIAG_SHOW_*
	Cookie   [2]uint32
}

// NDIAG_PROTO_ALL asks for the sockets of every netlink protocol.
const NDIAG_PROTO_ALL = 0xff

// ndiag_show bits.
const (
	NDIAG_SHOW_MEMINFO = 0x1
	NDIAG_SHOW_GROUPS  = 0x2
	NDIAG_SHOW_FLAGS   = 0x8
)

// NetlinkDiagMsg is struct netlink_diag_msg (28 bytes).
type NetlinkDiagMsg struct {
	Family    uint8
	Type      uint8
	Protocol  uint8
	State     uint8
	Portid    uint32
	DstPortid uint32
	DstGroup  uint32
	Ino       uint32
	Cookie    [2]uint32
}

// Attribute types of a netlink_diag_msg (numbered from 0).
const (
	NETLINK_DIAG_MEMINFO = iota
	NETLINK_DIAG_GROUPS
	NETLINK_DIAG_RX_RING
	NETLINK_DIAG_TX_RING
	NETLINK_DIAG_FLAGS
)

// NETLINK_DIAG_FLAGS bits.
const (
	NDIAG_FLAG_CB_RUNNING      = 0x01
	NDIAG_FLAG_PKTINFO         = 0x02
	NDIAG_FLAG_BROADCAST_ERROR = 0x04
	NDIAG_FLAG_NO_ENOBUFS      = 0x08
	NDIAG_FLAG_LISTEN_ALL_NSID = 0x10
	NDIAG_FLAG_CAP_ACK         = 0x20
)

// ndiag_state values (net/netlink/af_netlink.h): connect() sets a default
// destination.
const (
	NETLINK_UNCONNECTED = 0
	NETLINK_CONNECTED   = 1
)

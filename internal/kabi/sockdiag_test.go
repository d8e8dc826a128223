package kabi

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sock_diag structs, pinned to the sizes of their UAPI headers: the
// kernel refuses a request shorter than its struct (EINVAL) and a wrong
// message size would shift every attribute after it.
func TestSockDiagSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"unix_diag_msg", unsafe.Sizeof(UnixDiagMsg{}), UnixDiagMsgSize},
		{"unix_diag_req", unsafe.Sizeof(UnixDiagReq{}), 24},
		{"inet_diag_sockid", unsafe.Sizeof(InetDiagSockid{}), 48},
		{"inet_diag_req_v2", unsafe.Sizeof(InetDiagReqV2{}), 56},
		{"inet_diag_msg", unsafe.Sizeof(InetDiagMsg{}), 72},
		{"inet_diag_meminfo", unsafe.Sizeof(InetDiagMeminfo{}), 16},
		{"tcp_info (first part)", unsafe.Sizeof(TCPInfo{}), TCPInfoSize},
		{"packet_diag_req", unsafe.Sizeof(PacketDiagReq{}), 20},
		{"packet_diag_msg", unsafe.Sizeof(PacketDiagMsg{}), 16},
		{"packet_diag_info", unsafe.Sizeof(PacketDiagInfo{}), 24},
		{"packet_diag_mclist", unsafe.Sizeof(PacketDiagMclist{}), 44},
		{"packet_diag_ring", unsafe.Sizeof(PacketDiagRing{}), 28},
		{"netlink_diag_req", unsafe.Sizeof(NetlinkDiagReq{}), 20},
		{"netlink_diag_msg", unsafe.Sizeof(NetlinkDiagMsg{}), 28},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TCPInfo must agree with x/sys/unix's generated TCPInfo on every field
// both have: the generated one is the reference for offsets.
func TestTCPInfoOffsets(t *testing.T) {
	var k TCPInfo
	var x unix.TCPInfo
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"options", unsafe.Offsetof(k.Options), unsafe.Offsetof(x.Options)},
		{"rto", unsafe.Offsetof(k.RTO), unsafe.Offsetof(x.Rto)},
		{"snd_mss", unsafe.Offsetof(k.SndMSS), unsafe.Offsetof(x.Snd_mss)},
		{"fackets", unsafe.Offsetof(k.Fackets), unsafe.Offsetof(x.Fackets)},
		{"last_ack_recv", unsafe.Offsetof(k.LastAckRecv), unsafe.Offsetof(x.Last_ack_recv)},
		{"advmss", unsafe.Offsetof(k.AdvMSS), unsafe.Offsetof(x.Advmss)},
		{"rcv_space", unsafe.Offsetof(k.RcvSpace), unsafe.Offsetof(x.Rcv_space)},
		{"total_retrans", unsafe.Offsetof(k.TotalRetrans), unsafe.Offsetof(x.Total_retrans)},
		{"end", unsafe.Sizeof(k), unsafe.Offsetof(x.Pacing_rate)},
	} {
		if c.got != c.want {
			t.Errorf("offsetof(tcp_info, %s) = %d, want %d", c.name, c.got, c.want)
		}
	}
	if unsafe.Offsetof(k.Wscale) != 6 {
		t.Errorf("window scales at %d, want 6", unsafe.Offsetof(k.Wscale))
	}
}

package sockdiag

import (
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// snapshot is what sock_diag said about a world: live answers, or
// captured replies parsed.
type snapshot struct {
	Unix    []Unix
	Inet    map[string][]Inet // by inetDumps name
	Packet  []Packet
	Netlink []Netlink
}

// inetDumps are the inet dumps a snapshot holds, by name (also the
// testdata file names).
var inetDumps = []struct {
	name             string
	family, protocol uint8
}{
	{"tcp4", unix.AF_INET, unix.IPPROTO_TCP},
	{"tcp6", unix.AF_INET6, unix.IPPROTO_TCP},
	{"udp4", unix.AF_INET, unix.IPPROTO_UDP},
	{"udp6", unix.AF_INET6, unix.IPPROTO_UDP},
	{"udplite4", unix.AF_INET, unix.IPPROTO_UDPLITE},
}

// query takes a snapshot through c.
func query(t *testing.T, c *Conn) *snapshot {
	t.Helper()
	s := &snapshot{Inet: map[string][]Inet{}}
	var err error
	if s.Unix, err = c.Unix(); err != nil {
		t.Fatal(err)
	}
	for _, d := range inetDumps {
		if s.Inet[d.name], err = c.Inet(d.family, d.protocol, ExtAll); err != nil {
			t.Fatal(err)
		}
	}
	if s.Packet, err = c.Packet(); err != nil {
		t.Fatal(err)
	}
	if s.Netlink, err = c.Netlink(); err != nil {
		t.Fatal(err)
	}
	return s
}

func find[T any](t *testing.T, s []T, ino func(*T) uint32, name string, want uint32) *T {
	t.Helper()
	for i := range s {
		if ino(&s[i]) == want {
			return &s[i]
		}
	}
	t.Errorf("%s (inode %d) not in the reply", name, want)
	return nil
}

func same[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// checkWorld checks that s describes the world of f, field by field
// where the world set or learnt a value.
func checkWorld(t *testing.T, f *facts, s *snapshot) {
	t.Helper()
	ino := f.Inodes
	t.Run("unix", func(t *testing.T) { checkUnix(t, f, s.Unix) })
	t.Run("inet", func(t *testing.T) { checkInet(t, f, s.Inet) })
	t.Run("packet", func(t *testing.T) {
		pino := func(p *Packet) uint32 { return p.Inode }
		if p := find(t, s.Packet, pino, "packet-raw", ino["packet-raw"]); p != nil {
			same(t, "type", p.Type, unix.SOCK_RAW)
			same(t, "protocol", p.Protocol, uint16(unix.ETH_P_ALL))
			same(t, "uid", [2]any{p.UID, p.HasUID}, [2]any{f.UID, true})
			if p.Info == nil {
				t.Fatal("no PACKET_DIAG_INFO")
			}
			same(t, "interface", p.Info.Index, f.LoIndex)
			same(t, "version", p.Info.Version, uint32(unix.TPACKET_V3))
			same(t, "flags", p.Info.Flags, uint32(kabi.PDI_RUNNING|kabi.PDI_AUXDATA))
			same(t, "memberships", p.Mclist, []kabi.PacketDiagMclist{{Index: f.LoIndex, Count: 1, Type: unix.PACKET_MR_PROMISC}})
			same(t, "rx ring", p.RxRing, &kabi.PacketDiagRing{BlockSize: 4096, BlockNr: 2, FrameSize: 2048, FrameNr: 4, RetireTmo: 60})
			same(t, "tx ring", p.TxRing, (*kabi.PacketDiagRing)(nil))
			same(t, "fanout", [2]any{p.Fanout, p.HasFanout}, [2]any{uint32(f.FanoutID) | unix.PACKET_FANOUT_LB<<16, true})
			same(t, "filter", p.Filter, []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000}})
			same(t, "filter hidden", p.FilterHidden, false)
			if p.MemInfo == nil || p.MemInfo.Rcvbuf == 0 {
				t.Errorf("meminfo %+v", p.MemInfo)
			}
			if p.Cookie == 0 {
				t.Error("no cookie")
			}
		}
		if p := find(t, s.Packet, pino, "packet-dgram", ino["packet-dgram"]); p != nil {
			same(t, "type", p.Type, unix.SOCK_DGRAM)
			same(t, "protocol", p.Protocol, uint16(0))
			if p.Info == nil || p.Info.Index != 0 || p.Info.Version != unix.TPACKET_V2 || p.Info.Flags&kabi.PDI_RUNNING != 0 {
				t.Errorf("info %+v", p.Info)
			}
			same(t, "rx ring", p.RxRing, (*kabi.PacketDiagRing)(nil))
			same(t, "tx ring", p.TxRing, &kabi.PacketDiagRing{BlockSize: 4096, BlockNr: 1, FrameSize: 2048, FrameNr: 2})
			same(t, "memberships", p.Mclist, []kabi.PacketDiagMclist(nil))
			same(t, "fanout", p.HasFanout, false)
			same(t, "filter", [2]any{p.Filter, p.FilterHidden}, [2]any{[]unix.SockFilter(nil), false})
		}
	})
	t.Run("netlink", func(t *testing.T) {
		nino := func(n *Netlink) uint32 { return n.Inode }
		if n := find(t, s.Netlink, nino, "netlink-route", ino["netlink-route"]); n != nil {
			same(t, "protocol", n.Protocol, unix.NETLINK_ROUTE)
			same(t, "type", n.Type, unix.SOCK_RAW)
			same(t, "port id", n.PortID, f.PortIDs["netlink-route"])
			same(t, "state", n.State, uint8(kabi.TCP_CLOSE))
			for g := uint32(1); g <= 64; g++ {
				want := g == 1 || g == 5 || g == rtnlGroup34
				if n.Member(g) != want {
					t.Errorf("member of group %d: %v, want %v (groups %#x)", g, n.Member(g), want, n.Groups)
				}
			}
			same(t, "flags", [2]any{n.Flags, n.HasFlags}, [2]any{uint32(0), true})
			if n.MemInfo == nil || n.MemInfo.Rcvbuf == 0 {
				t.Errorf("meminfo %+v", n.MemInfo)
			}
		}
		if n := find(t, s.Netlink, nino, "netlink-generic", ino["netlink-generic"]); n != nil {
			same(t, "protocol", n.Protocol, unix.NETLINK_GENERIC)
			same(t, "type", n.Type, unix.SOCK_DGRAM)
			same(t, "port id", n.PortID, f.PortIDs["netlink-generic"])
			same(t, "state", n.State, uint8(kabi.NETLINK_CONNECTED))
			same(t, "destination", [2]uint32{n.DstPortID, n.DstGroup}, [2]uint32{0, 0})
			same(t, "flags", n.Flags, uint32(kabi.NDIAG_FLAG_NO_ENOBUFS|kabi.NDIAG_FLAG_CAP_ACK))
			same(t, "groups", n.Groups, []uint32(nil))
		}
		kernel := 0
		for _, n := range s.Netlink {
			if n.PortID == 0 && n.Protocol == unix.NETLINK_ROUTE {
				kernel++
			}
		}
		if kernel != 1 {
			t.Errorf("%d NETLINK_ROUTE sockets of port 0 (the kernel's rtnl), want 1", kernel)
		}
	})
}

func checkUnix(t *testing.T, f *facts, s []Unix) {
	ino := f.Inodes
	get := func(name string) *Unix { return find(t, s, func(u *Unix) uint32 { return u.Inode }, name, ino[name]) }
	for _, name := range []string{"unix-pair-a", "unix-pair-b", "unix-listener", "unix-client", "unix-accepted",
		"unix-pending", "unix-dgram", "unix-sender", "unix-seq-a", "unix-seq-b"} {
		if u := get(name); u != nil {
			if !u.HasUID || u.UID != f.UID || u.MemInfo == nil || u.Cookie == 0 {
				t.Errorf("%s: uid %d (%v), meminfo %v, cookie %d", name, u.UID, u.HasUID, u.MemInfo, u.Cookie)
			}
		}
	}
	path := []byte(f.Path + "\x00")
	if a, b := get("unix-pair-a"), get("unix-pair-b"); a != nil && b != nil {
		same(t, "pair", [][5]any{{a.Type, a.State, a.Peer, a.Shutdown, a.Name}, {b.Type, b.State, b.Peer, b.Shutdown, b.Name}},
			[][5]any{{uint8(unix.SOCK_STREAM), uint8(kabi.TCP_ESTABLISHED), ino["unix-pair-b"], uint8(2), []byte(nil)},
				{uint8(unix.SOCK_STREAM), uint8(kabi.TCP_ESTABLISHED), ino["unix-pair-a"], uint8(1), []byte(nil)}})
		same(t, "pair-b unread bytes", b.RQLen, uint32(5))
		// af_unix charges a message to its sender's memory, not to
		// the receiver's: the 5 bytes show as a's.
		if a.WQLen == 0 || a.MemInfo == nil || a.MemInfo.WmemAlloc != a.WQLen {
			t.Errorf("pair: a's wqlen %d, meminfo %+v: the 5 bytes do not show", a.WQLen, a.MemInfo)
		}
	}
	if l := get("unix-listener"); l != nil {
		same(t, "listener", [7]any{l.State, l.Name, l.HasVFS, l.VFSIno, l.Icons, l.RQLen, l.WQLen},
			[7]any{uint8(kabi.TCP_LISTEN), path, true, ino["unix-listener-file"], []uint32{ino["unix-pending"]}, uint32(1), uint32(unixBacklog)})
		if l.VFSDev == 0 {
			t.Error("listener's socket file on device 0")
		}
	}
	if c, a := get("unix-client"), get("unix-accepted"); c != nil && a != nil {
		same(t, "client", [3]any{c.State, c.Peer, c.Name}, [3]any{uint8(kabi.TCP_ESTABLISHED), ino["unix-accepted"], []byte(nil)})
		// The accepted end carries its listener's name and file.
		same(t, "accepted", [4]any{a.State, a.Peer, a.Name, a.VFSIno}, [4]any{uint8(kabi.TCP_ESTABLISHED), ino["unix-client"], path, ino["unix-listener-file"]})
		same(t, "accepted: icons", a.Icons, []uint32(nil))
	}
	if p := get("unix-pending"); p != nil {
		same(t, "pending: state, peer", [2]any{p.State, p.Peer}, [2]any{uint8(kabi.TCP_ESTABLISHED), uint32(0)})
	}
	if d := get("unix-dgram"); d != nil {
		// A datagram socket another connected to is TCP_ESTABLISHED
		// too (unix_dgram_connect sets both ends, since Linux 5.15),
		// though it has no peer.
		same(t, "dgram", [6]any{d.Type, d.State, d.Peer, d.Name, d.HasVFS, d.RQLen},
			[6]any{uint8(unix.SOCK_DGRAM), uint8(kabi.TCP_ESTABLISHED), uint32(0), []byte("\x00" + f.Abstract), false, uint32(len("one"))})
	}
	if d := get("unix-sender"); d != nil {
		same(t, "sender", [3]any{d.Type, d.State, d.Peer}, [3]any{uint8(unix.SOCK_DGRAM), uint8(kabi.TCP_ESTABLISHED), ino["unix-dgram"]})
	}
	if a, b := get("unix-seq-a"), get("unix-seq-b"); a != nil && b != nil {
		same(t, "seqpacket", [4]any{a.Type, a.Peer, b.Type, b.Peer}, [4]any{uint8(unix.SOCK_SEQPACKET), ino["unix-seq-b"], uint8(unix.SOCK_SEQPACKET), ino["unix-seq-a"]})
	}
}

func checkInet(t *testing.T, f *facts, dumps map[string][]Inet) {
	ino, port := f.Inodes, f.Ports
	lo4 := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p) }
	lo6 := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.IPv6Loopback(), p) }
	any4, any6 := netip.AddrPortFrom(netip.IPv4Unspecified(), 0), netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	get := func(dump, name string) *Inet {
		return find(t, dumps[dump], func(s *Inet) uint32 { return s.Inode }, name, ino[name])
	}
	full := func(name string, s *Inet, family, protocol uint8) {
		t.Helper()
		if s.Family != family || s.Protocol != protocol || s.UID != f.UID || s.Cookie == 0 || !s.HasCgroupID || !s.HasSockOpt ||
			s.SkMemInfo == nil || s.MemInfo == nil || !s.HasTOS || !s.HasClassID || !s.HasMark {
			t.Errorf("%s: %+v", name, s)
		}
	}

	if l := get("tcp4", "tcp4-listener"); l != nil {
		full("tcp4-listener", l, unix.AF_INET, unix.IPPROTO_TCP)
		same(t, "tcp4 listener", [6]any{l.State, l.Src, l.Dst, l.RQueue, l.WQueue, l.Mark},
			[6]any{uint8(kabi.TCP_LISTEN), lo4(port["tcp4-listener"]), any4, uint32(1), uint32(worldBacklog), uint32(worldMark)})
		// inet_diag_sockopt's bits: is_icsk (1), mc_loop (4) and
		// mc_all (6), which inet_create sets on every socket.
		same(t, "tcp4 listener: sockopt", l.SockOpt, uint16(1<<1|1<<4|1<<6))
		if l.TCPInfo == nil || l.TCPInfo.State != kabi.TCP_LISTEN || l.Cong == "" {
			t.Errorf("tcp4 listener: tcp_info %+v, congestion control %q", l.TCPInfo, l.Cong)
		}
	}
	c, a := get("tcp4", "tcp4-client"), get("tcp4", "tcp4-accepted")
	if c != nil && a != nil {
		full("tcp4-client", c, unix.AF_INET, unix.IPPROTO_TCP)
		full("tcp4-accepted", a, unix.AF_INET, unix.IPPROTO_TCP)
		same(t, "tcp4 client", [5]any{c.State, c.Src, c.Dst, c.TOS, c.Shutdown},
			[5]any{uint8(tcpCloseWait), lo4(port["tcp4-client"]), lo4(port["tcp4-listener"]), uint8(worldTOS), uint8(1)}) // the peer's FIN: RCV_SHUTDOWN
		same(t, "tcp4 accepted", [6]any{a.State, a.Src, a.Dst, a.RQueue, a.Shutdown, a.ClassID},
			[6]any{uint8(kabi.TCP_FIN_WAIT2), lo4(port["tcp4-listener"]), lo4(port["tcp4-client"]), uint32(len("ping")), uint8(2), uint32(worldPriority)})
		for name, s := range map[string]*Inet{"tcp4-client": c, "tcp4-accepted": a} {
			ti, want := s.TCPInfo, f.TCPInfo[name]
			if ti == nil {
				t.Errorf("%s: no tcp_info", name)
				continue
			}
			same(t, name+" tcp_info", tcpFacts{ti.State, ti.Options, ti.SndMSS, ti.RcvMSS, ti.AdvMSS}, want)
			if len(ti.Raw) < kabi.TCPInfoSize || ti.Raw[0] != ti.State {
				t.Errorf("%s: raw tcp_info of %d bytes", name, len(ti.Raw))
			}
			if ti.Options&kabi.TCPI_OPT_WSCALE == 0 {
				t.Errorf("%s: no window scaling (options %#x)", name, ti.Options)
			}
		}
		// Each end's send scale is the other's receive scale; the
		// client's small SO_RCVBUF made its receive scale the smaller.
		if ct, at := c.TCPInfo, a.TCPInfo; ct != nil && at != nil {
			if ct.SndWscale != at.RcvWscale || ct.RcvWscale != at.SndWscale || ct.RcvWscale >= ct.SndWscale {
				t.Errorf("window scales: client snd %d rcv %d, accepted snd %d rcv %d", ct.SndWscale, ct.RcvWscale, at.SndWscale, at.RcvWscale)
			}
		}
	}
	if p := get("tcp4", "tcp4-pending"); p != nil {
		same(t, "tcp4 pending", [2]any{p.State, p.Dst}, [2]any{uint8(kabi.TCP_ESTABLISHED), lo4(port["tcp4-listener"])})
	}
	tw := 0
	for _, s := range dumps["tcp4"] {
		if s.State == kabi.TCP_TIME_WAIT && s.Src == lo4(port["tcp4-listener"]) && s.Dst == lo4(port["tcp4-timewait-peer"]) {
			tw++
			if s.Inode != 0 || s.UID != 0 || s.TCPInfo != nil || s.HasCgroupID {
				t.Errorf("TIME_WAIT entry with a socket's fields: %+v", s)
			}
		}
	}
	same(t, "TIME_WAIT entries", tw, 1)

	if l := get("tcp6", "tcp6-listener"); l != nil {
		full("tcp6-listener", l, unix.AF_INET6, unix.IPPROTO_TCP)
		same(t, "tcp6 listener", [4]any{l.State, l.Src, l.V6Only, l.HasV6Only}, [4]any{uint8(kabi.TCP_LISTEN), lo6(port["tcp6-listener"]), true, true})
	}
	if d := get("tcp6", "tcp6-dual"); d != nil {
		same(t, "tcp6 dual", [5]any{d.Src, d.V6Only, d.HasV6Only, d.TClass, d.HasTClass},
			[5]any{netip.AddrPortFrom(netip.IPv6Unspecified(), port["tcp6-dual"]), false, true, uint8(worldTClass), true})
	}
	if m := get("tcp6", "tcp6-mapped"); m != nil {
		mapped := netip.AddrFrom16(netip.MustParseAddr("127.0.0.1").As16())
		same(t, "tcp6 mapped", [5]any{m.Family, m.State, m.Src, m.Dst, m.HasV6Only},
			[5]any{uint8(unix.AF_INET6), uint8(kabi.TCP_ESTABLISHED), netip.AddrPortFrom(mapped, port["tcp6-dual"]), netip.AddrPortFrom(mapped, port["tcp4-to-dual"]), false})
	}
	if c := get("tcp4", "tcp4-to-dual"); c != nil {
		same(t, "tcp4 to dual", c.Dst, lo4(port["tcp6-dual"]))
	}

	if u := get("udp4", "udp4-bound"); u != nil {
		full("udp4-bound", u, unix.AF_INET, unix.IPPROTO_UDP)
		same(t, "udp4 bound", [4]any{u.State, u.Src, u.Dst, u.Interface}, [4]any{uint8(kabi.TCP_CLOSE), lo4(port["udp4-bound"]), any4, f.LoIndex})
		same(t, "udp4 bound: sockopt (freebind, mc_loop, mc_all)", u.SockOpt, uint16(1<<2|1<<4|1<<6))
		if u.RQueue == 0 || u.TCPInfo != nil {
			t.Errorf("udp4 bound: rqueue %d (a datagram is queued), tcp_info %v", u.RQueue, u.TCPInfo)
		}
	}
	if u := get("udp4", "udp4-connected"); u != nil {
		same(t, "udp4 connected", [3]any{u.State, u.Src, u.Dst}, [3]any{uint8(kabi.TCP_ESTABLISHED), lo4(port["udp4-connected"]), lo4(port["udp4-bound"])})
	}
	if u := get("udp6", "udp6-bound"); u != nil {
		full("udp6-bound", u, unix.AF_INET6, unix.IPPROTO_UDP)
		// Binding to a specific IPv6 address makes a socket v6-only
		// (__inet6_bind), whatever IPV6_V6ONLY said.
		same(t, "udp6 bound", [4]any{u.Src, u.Dst, u.V6Only, u.HasV6Only}, [4]any{lo6(port["udp6-bound"]), any6, true, true})
	}
	if u := get("udplite4", "udplite4-bound"); u != nil {
		full("udplite4-bound", u, unix.AF_INET, unix.IPPROTO_UDPLITE)
		same(t, "udplite4 bound", u.Src, lo4(port["udplite4-bound"]))
	}
	// Each dump lists its own protocol's sockets only.
	for dump, names := range map[string][]string{"udp4": {"udplite4-bound", "tcp4-listener"}, "tcp4": {"udp4-bound", "tcp6-listener"}} {
		for _, n := range names {
			for _, s := range dumps[dump] {
				if s.Inode == ino[n] {
					t.Errorf("%s in the %s dump", n, dump)
				}
			}
		}
	}
}

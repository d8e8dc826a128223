package sockdiag

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// A world is a set of sockets of every family this package parses, each
// in a state chosen to make one attribute show, and the facts about them
// that the test knows without sock_diag (fstat inodes, getsockname ports,
// getsockopt TCP_INFO). The live tests build one and query the kernel;
// the capture builds one in a fresh network namespace and saves the
// replies and the facts as testdata, which the golden tests check with
// the same checkWorld.
type world struct {
	fds   []int
	facts facts
}

// facts is what checkWorld compares replies against. It is saved as
// testdata/world.json next to the captured replies.
type facts struct {
	Pid      int
	UID      uint32
	LoIndex  uint32
	Path     string // the unix listener's path
	Abstract string // the unix datagram socket's abstract name, without its NUL
	FanoutID uint16
	Inodes   map[string]uint32
	Ports    map[string]uint16
	PortIDs  map[string]uint32 // netlink
	TCPInfo  map[string]tcpFacts
}

// tcpFacts is what getsockopt(TCP_INFO) said, through x/sys/unix.
type tcpFacts struct {
	State, Options         uint8
	SndMSS, RcvMSS, AdvMSS uint32
}

// Values set on the world's sockets, each checked where it shows.
const (
	worldMark     = 0x1234 // SO_MARK of tcp4-listener
	worldTOS      = 0x10   // IP_TOS of tcp4-client
	worldTClass   = 0x20   // IPV6_TCLASS of tcp6-dual
	worldPriority = 3      // SO_PRIORITY of tcp4-accepted: INET_DIAG_CLASS_ID without net_cls
	worldBacklog  = 8      // of the TCP listeners
	unixBacklog   = 5
	rtnlGroup34   = 34 // a group past the first bitmap word, by NETLINK_ADD_MEMBERSHIP
	smallRcvbuf   = 4096
)

func (w *world) close() {
	for _, fd := range w.fds {
		unix.Close(fd)
	}
}

// worldError carries a failed setup step out of buildWorld's panics.
type worldError struct{ err error }

func must(what string, err error) {
	if err != nil {
		panic(worldError{fmt.Errorf("%s: %w", what, err)})
	}
}

// buildWorld creates the sockets, in the calling thread's network
// namespace, with the unix listener under dir. Its loopback must be up.
func buildWorld(dir string, fanoutID uint16) (w *world, err error) {
	w = &world{facts: facts{
		Pid: os.Getpid(), UID: uint32(os.Getuid()), FanoutID: fanoutID,
		Path:     filepath.Join(dir, "l.sock"),
		Abstract: "cryo-sockdiag-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(int(fanoutID)),
		Inodes:   map[string]uint32{}, Ports: map[string]uint16{}, PortIDs: map[string]uint32{},
		TCPInfo: map[string]tcpFacts{},
	}}
	defer func() {
		if r := recover(); r != nil {
			we, ok := r.(worldError)
			if !ok {
				panic(r)
			}
			w.close()
			w, err = nil, we.err
		}
	}()
	f := &w.facts
	sock := func(name string, domain, typ, proto int) int {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		must(name, err)
		w.keep(name, fd)
		return fd
	}
	lo, err := unix.NewIfreq("lo")
	must("ifreq", err)
	ctl := sock("", unix.AF_INET, unix.SOCK_DGRAM, 0)
	must("SIOCGIFINDEX lo", unix.IoctlIfreq(ctl, unix.SIOCGIFINDEX, lo))
	f.LoIndex = lo.Uint32()
	loop4 := [4]byte{127, 0, 0, 1}
	loop6 := [16]byte{15: 1}
	port := func(name string, fd int) uint16 {
		sa, err := unix.Getsockname(fd)
		must(name+": getsockname", err)
		var p int
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			p = sa.Port
		case *unix.SockaddrInet6:
			p = sa.Port
		}
		f.Ports[name] = uint16(p)
		return uint16(p)
	}

	// unix: a stream pair with 5 bytes queued one way and that way shut
	// down; a listener with one accepted and one waiting connection; a
	// datagram socket with an abstract name and two datagrams queued; a
	// seqpacket pair.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must("socketpair", err)
	w.keep("unix-pair-a", pair[0])
	w.keep("unix-pair-b", pair[1])
	_, err = unix.Write(pair[0], []byte("hello"))
	must("write pair", err)
	must("shutdown pair", unix.Shutdown(pair[0], unix.SHUT_WR))
	ul := sock("unix-listener", unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must("bind "+f.Path, unix.Bind(ul, &unix.SockaddrUnix{Name: f.Path}))
	must("listen", unix.Listen(ul, unixBacklog))
	var st unix.Stat_t
	must("stat", unix.Stat(f.Path, &st))
	f.Inodes["unix-listener-file"] = uint32(st.Ino)
	uc := sock("unix-client", unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must("connect unix", unix.Connect(uc, &unix.SockaddrUnix{Name: f.Path}))
	ua, _, err := unix.Accept4(ul, unix.SOCK_CLOEXEC)
	must("accept unix", err)
	w.keep("unix-accepted", ua)
	up := sock("unix-pending", unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must("connect unix", unix.Connect(up, &unix.SockaddrUnix{Name: f.Path}))
	ud := sock("unix-dgram", unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	must("bind abstract", unix.Bind(ud, &unix.SockaddrUnix{Name: "@" + f.Abstract}))
	us := sock("unix-sender", unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	must("connect abstract", unix.Connect(us, &unix.SockaddrUnix{Name: "@" + f.Abstract}))
	for _, m := range []string{"one", "three"} {
		_, err := unix.Write(us, []byte(m))
		must("send datagram", err)
	}
	seq, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must("socketpair", err)
	w.keep("unix-seq-a", seq[0])
	w.keep("unix-seq-b", seq[1])

	// TCP over IPv4: a marked listener with an accepted connection
	// (client: small receive buffer, so the two window scales differ,
	// and a TOS; accepted end: a priority, 4 unread bytes, shut down for
	// writing), a connection closed into TIME_WAIT, and one waiting to
	// be accepted.
	l4 := sock("tcp4-listener", unix.AF_INET, unix.SOCK_STREAM, 0)
	must("SO_MARK", unix.SetsockoptInt(l4, unix.SOL_SOCKET, unix.SO_MARK, worldMark))
	must("bind tcp4", unix.Bind(l4, &unix.SockaddrInet4{Addr: loop4}))
	must("listen", unix.Listen(l4, worldBacklog))
	lport := port("tcp4-listener", l4)
	to4 := &unix.SockaddrInet4{Addr: loop4, Port: int(lport)}
	c2 := sock("tcp4-client", unix.AF_INET, unix.SOCK_STREAM, 0)
	must("SO_RCVBUF", unix.SetsockoptInt(c2, unix.SOL_SOCKET, unix.SO_RCVBUF, smallRcvbuf))
	must("IP_TOS", unix.SetsockoptInt(c2, unix.IPPROTO_IP, unix.IP_TOS, worldTOS))
	must("connect tcp4", unix.Connect(c2, to4))
	port("tcp4-client", c2)
	a2, _, err := unix.Accept4(l4, unix.SOCK_CLOEXEC)
	must("accept tcp4", err)
	w.keep("tcp4-accepted", a2)
	must("SO_PRIORITY", unix.SetsockoptInt(a2, unix.SOL_SOCKET, unix.SO_PRIORITY, worldPriority))
	_, err = unix.Write(c2, []byte("ping"))
	must("write tcp4", err)
	c3, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must("socket", err)
	must("connect tcp4", unix.Connect(c3, to4))
	port("tcp4-timewait-peer", c3)
	a3, _, err := unix.Accept4(l4, unix.SOCK_CLOEXEC)
	must("accept tcp4", err)
	// The accepted end closes first, so it is the one left in TIME_WAIT.
	unix.Close(a3)
	must("FIN to tcp4-timewait-peer", waitTCPState(c3, tcpCloseWait))
	unix.Close(c3)
	pend := sock("tcp4-pending", unix.AF_INET, unix.SOCK_STREAM, 0)
	must("connect tcp4", unix.Connect(pend, to4))
	must("shutdown tcp4", unix.Shutdown(a2, unix.SHUT_WR))
	must("FIN to tcp4-client", waitTCPState(c2, tcpCloseWait))
	must("ACK of tcp4-accepted's FIN", waitTCPState(a2, tcpFinWait2))
	for name, fd := range map[string]int{"tcp4-client": c2, "tcp4-accepted": a2} {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		must("TCP_INFO", err)
		f.TCPInfo[name] = tcpFacts{State: ti.State, Options: ti.Options, SndMSS: ti.Snd_mss, RcvMSS: ti.Rcv_mss, AdvMSS: ti.Advmss}
	}

	// TCP over IPv6: a v6-only listener, and a dual-stack one with a
	// traffic class that accepted a connection from IPv4 (v4-mapped).
	l6 := sock("tcp6-listener", unix.AF_INET6, unix.SOCK_STREAM, 0)
	must("IPV6_V6ONLY", unix.SetsockoptInt(l6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1))
	must("bind tcp6", unix.Bind(l6, &unix.SockaddrInet6{Addr: loop6}))
	must("listen", unix.Listen(l6, worldBacklog))
	port("tcp6-listener", l6)
	dual := sock("tcp6-dual", unix.AF_INET6, unix.SOCK_STREAM, 0)
	must("IPV6_V6ONLY", unix.SetsockoptInt(dual, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0))
	must("IPV6_TCLASS", unix.SetsockoptInt(dual, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, worldTClass))
	must("bind tcp6", unix.Bind(dual, &unix.SockaddrInet6{}))
	must("listen", unix.Listen(dual, worldBacklog))
	dport := port("tcp6-dual", dual)
	c4 := sock("tcp4-to-dual", unix.AF_INET, unix.SOCK_STREAM, 0)
	must("connect dual", unix.Connect(c4, &unix.SockaddrInet4{Addr: loop4, Port: int(dport)}))
	port("tcp4-to-dual", c4)
	mapped, _, err := unix.Accept4(dual, unix.SOCK_CLOEXEC)
	must("accept dual", err)
	w.keep("tcp6-mapped", mapped)

	// UDP: a socket bound to lo (IP_FREEBIND) with a datagram queued,
	// the connected socket that sent it, an IPv6 one, a UDP-Lite one;
	// and a raw ICMP socket, which only raw_diag could list.
	u4 := sock("udp4-bound", unix.AF_INET, unix.SOCK_DGRAM, 0)
	must("SO_BINDTODEVICE", unix.BindToDevice(u4, "lo"))
	must("IP_FREEBIND", unix.SetsockoptInt(u4, unix.IPPROTO_IP, unix.IP_FREEBIND, 1))
	must("bind udp4", unix.Bind(u4, &unix.SockaddrInet4{Addr: loop4}))
	uport := port("udp4-bound", u4)
	uc4 := sock("udp4-connected", unix.AF_INET, unix.SOCK_DGRAM, 0)
	must("connect udp4", unix.Connect(uc4, &unix.SockaddrInet4{Addr: loop4, Port: int(uport)}))
	port("udp4-connected", uc4)
	_, err = unix.Write(uc4, []byte("datagram"))
	must("send udp4", err)
	u6 := sock("udp6-bound", unix.AF_INET6, unix.SOCK_DGRAM, 0)
	must("bind udp6", unix.Bind(u6, &unix.SockaddrInet6{Addr: loop6}))
	port("udp6-bound", u6)
	ulite := sock("udplite4-bound", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE)
	must("bind udplite", unix.Bind(ulite, &unix.SockaddrInet4{Addr: loop4}))
	port("udplite4-bound", ulite)
	sock("raw4-icmp", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)

	// packet: a raw socket on lo with a TPACKET_V3 receive ring, a
	// promiscuous membership, auxdata, a classic filter and a fanout
	// group; an unbound datagram socket with a TPACKET_V2 send ring.
	pr := sock("packet-raw", unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	must("PACKET_VERSION", unix.SetsockoptInt(pr, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3))
	must("PACKET_RX_RING", unix.SetsockoptTpacketReq3(pr, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq3{
		Block_size: 4096, Block_nr: 2, Frame_size: 2048, Frame_nr: 4, Retire_blk_tov: 60}))
	must("bind packet", unix.Bind(pr, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: int(f.LoIndex)}))
	must("PACKET_ADD_MEMBERSHIP", unix.SetsockoptPacketMreq(pr, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP,
		&unix.PacketMreq{Ifindex: int32(f.LoIndex), Type: unix.PACKET_MR_PROMISC}))
	must("PACKET_AUXDATA", unix.SetsockoptInt(pr, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1))
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000}}
	must("SO_ATTACH_FILTER", unix.SetsockoptSockFprog(pr, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &prog[0]}))
	must("PACKET_FANOUT", unix.SetsockoptInt(pr, unix.SOL_PACKET, unix.PACKET_FANOUT, int(fanoutID)|unix.PACKET_FANOUT_LB<<16))
	pd := sock("packet-dgram", unix.AF_PACKET, unix.SOCK_DGRAM, 0)
	must("PACKET_VERSION", unix.SetsockoptInt(pd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2))
	must("PACKET_TX_RING", unix.SetsockoptTpacketReq(pd, unix.SOL_PACKET, unix.PACKET_TX_RING, &unix.TpacketReq{
		Block_size: 4096, Block_nr: 1, Frame_size: 2048, Frame_nr: 2}))

	// netlink: a route socket in groups 1, 5 and 34; a generic socket
	// connected to the kernel with two flags.
	nr := sock("netlink-route", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	must("bind netlink", unix.Bind(nr, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR}))
	must("NETLINK_ADD_MEMBERSHIP", unix.SetsockoptInt(nr, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, rtnlGroup34))
	ng := sock("netlink-generic", unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_GENERIC)
	must("NETLINK_NO_ENOBUFS", unix.SetsockoptInt(ng, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1))
	must("NETLINK_CAP_ACK", unix.SetsockoptInt(ng, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1))
	must("connect netlink", unix.Connect(ng, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}))
	for name, fd := range map[string]int{"netlink-route": nr, "netlink-generic": ng} {
		sa, err := unix.Getsockname(fd)
		must("getsockname netlink", err)
		f.PortIDs[name] = sa.(*unix.SockaddrNetlink).Pid
	}
	return w, nil
}

// keep records fd as the world's socket name (no name: a helper fd).
func (w *world) keep(name string, fd int) {
	w.fds = append(w.fds, fd)
	if name == "" {
		return
	}
	var st unix.Stat_t
	must(name+": fstat", unix.Fstat(fd, &st))
	w.facts.Inodes[name] = uint32(st.Ino)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

const (
	tcpFinWait2  = 5
	tcpCloseWait = 8
)

// waitTCPState waits, a bounded time, for the peer's FIN or ACK that the
// loopback delivers from softirq context, asynchronously to the sender.
func waitTCPState(fd int, state uint8) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		if ti.State == state {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("TCP state %d after 5 s, want %d", ti.State, state)
		}
		time.Sleep(time.Millisecond)
	}
}

// inNewNetns runs f on a thread that has left for a new network namespace
// with its loopback up, and returns that namespace, open: what f creates
// belongs to it. The thread then goes back (setns), as socketIn does and
// for the same reason; if it cannot, it stays locked and dies.
func inNewNetns(f func() error) (*os.File, error) {
	type result struct {
		ns  *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		ns, err := os.Open("/proc/thread-self/ns/net")
		if err == nil {
			if err = loopbackUp(); err == nil {
				err = f()
			}
			if err != nil {
				ns.Close()
				ns = nil
			}
		}
		if berr := setns(home); berr != nil {
			if ns != nil {
				ns.Close()
			}
			ch <- result{nil, berr}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

// loopbackUp sets lo up: a new namespace's loopback is down, and TCP over
// it then fails with ENETUNREACH.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo: %w", err)
	}
	return nil
}

// needsRoot says a world could not be built for want of privilege: it
// needs CAP_NET_ADMIN (SO_MARK), CAP_NET_RAW (packet and raw sockets) and,
// for a new namespace, CAP_SYS_ADMIN.
func needsRoot(err error) bool { return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) }

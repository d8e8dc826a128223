package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	skinet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	skopts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	tcpstream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/sockdiag"
)

// IPv4 and IPv6 sockets: TCP sockets that listen or were never connected,
// established TCP connections and half-closed ones (with
// --tcp-established: tcp.go holds the TCP repair part), UDP sockets bound
// or connected. Everything about such a socket is read
// from the socket itself, through cryo's copy of the fd: its address and
// peer (getsockname, getpeername), its state and backlog (TCP_INFO: a
// listener's tcpi_unacked is the length of its accept queue, tcpi_sacked
// the backlog given to listen), and its options. sock_diag, asked once per
// dump, names the connections that keep a listener from being dumped and
// says how much a UDP socket holds in its queues.
//
// Exact or refused: the options CRIU's image keeps are restored; every
// other option this file knows is compared with a socket cryo makes of the
// same family, type and protocol in the same network namespace, and one
// that differs is refused by name. So are a listener with connections in
// its accept queue (they cannot be taken without accept()), established
// TCP connections without --tcp-established and every other TCP state
// (closing ones by name), a UDP socket's queued datagrams when what they
// carry is not all recorded (udp.go), a socket bound to a device or
// to a link-local address, one with a socket filter, one with O_ASYNC,
// and a socket of another network namespace.
//
// Restore makes the socket in the process (socket(), so that it belongs to
// the process's network namespace), sets its options through cryo's copy
// of it, then binds, listens or connects by injected calls. A TCP socket
// has SO_REUSEADDR on while it binds, as CRIU does, so that connections of
// the dumped socket still in TIME_WAIT do not keep the port; it is then
// set back as the image says.

var inetKind = Kind{
	Name: "inet socket",
	Type: fdinfo.FdTypes_INETSK,
	Dump: func() dumper {
		return &inetDump{netns: map[int]bool{}, status: map[int]*procfs.Status{}, defs: map[[3]int]*sockDefaults{}}
	},
	Restore: func() opener { return &inetOpen{sameIDs: map[int]bool{}, streams: map[uint32]*tcpStream{}} },
	Describe: func(f *fdinfo.FileEntry) Description {
		e := f.GetIsk()
		desc := fmt.Sprintf("socket:[%d] %s %s %s", e.GetIno(), inetProtoName(int(e.GetProto())), imageAddr(e.GetSrcAddr(), e.GetSrcPort()), tcpStateName(int(e.GetState())))
		if e.GetState() == kabi.TCP_ESTABLISHED || (e.GetProto() == unix.IPPROTO_TCP && connected(int(e.GetState()))) {
			desc += " to " + imageAddr(e.GetDstAddr(), e.GetDstPort()).String()
		}
		return Description{Path: desc, HasFlags: true, Flags: e.GetFlags()}
	},
}

// inetDump is the tree's inet sockets.
type inetDump struct {
	diag   []sockdiag.Inet // every TCP and UDP socket of cryo's namespace, once asked
	byIno  map[uint32]*sockdiag.Inet
	netns  map[int]bool // pid → whether it is in cryo's network namespace
	myNs   *unix.Stat_t // cryo's network namespace
	status map[int]*procfs.Status
	defs   map[[3]int]*sockDefaults // by family, type, protocol
	conns  []*tcpConn               // established TCP connections (tcp.go)
	udpq   []udpQueue               // datagrams not yet read (udp.go)
}

func (it *inetDump) match(fd *Fd) bool {
	a, ok := fd.socket()
	return ok && (a.family == unix.AF_INET || a.family == unix.AF_INET6)
}

// inetSock is what the dump learns of one socket before deciding.
type inetSock struct {
	family, typ, proto int
	src, dst           netip.AddrPort
	state              int
}

func (s *inetSock) String() string {
	out := inetProtoName(s.proto) + " " + s.src.String()
	if s.dst.IsValid() && s.dst.Port() != 0 {
		out += " to " + s.dst.String()
	}
	return out + " in state " + tcpStateName(s.state)
}

func (it *inetDump) dump(dd *Dumper, e *Fd) (uint32, error) {
	a, _ := e.socket()
	fd, err := e.Copy()
	if err != nil {
		return 0, err
	}
	what := sockKind(a.family, a.typ) + " socket"
	p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("%s: SO_PROTOCOL: %w", what, err)
	}
	s := &inetSock{family: a.family, typ: a.typ, proto: p}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("%s: getsockname: %w", what, err)
	}
	var scope uint32
	if s.src, scope, err = addrPort(sa); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if pa, err := unix.Getpeername(fd); err == nil {
		if s.dst, _, err = addrPort(pa); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	var ti *unix.TCPInfo
	if p == unix.IPPROTO_TCP && a.typ == unix.SOCK_STREAM {
		if ti, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return 0, fmt.Errorf("%s: TCP_INFO: %w", what, err)
		}
		s.state = int(ti.State)
	} else {
		s.state = kabi.TCP_CLOSE
		if s.dst.IsValid() {
			s.state = kabi.TCP_ESTABLISHED
		}
	}
	what = fmt.Sprintf("%s (%s)", what, s)
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", what, fmt.Sprintf(format, args...), errs.ErrNotSupported)
	}
	if err := it.sameNetns(e.Pid, fd); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case a.typ == unix.SOCK_STREAM && p == unix.IPPROTO_TCP, a.typ == unix.SOCK_DGRAM && p == unix.IPPROTO_UDP:
	default:
		return 0, refuse("protocol %s", inetProtoName(p))
	}
	if scope != 0 {
		return 0, refuse("bound to a link-local address of interface %d", scope)
	}
	ie := &skinet.InetSkEntry{
		Ino: proto.Uint32(uint32(e.Stat.Ino)), Family: proto.Uint32(uint32(a.family)), Type: proto.Uint32(uint32(a.typ)),
		Proto: proto.Uint32(uint32(p)), State: proto.Uint32(uint32(s.state)),
		SrcPort: proto.Uint32(uint32(s.src.Port())), DstPort: proto.Uint32(0), Flags: proto.Uint32(e.Flags),
		Backlog: proto.Uint32(0), SrcAddr: addrWords(s.src.Addr()), Fown: noOwner(),
	}
	switch {
	case p == unix.IPPROTO_TCP && s.state == kabi.TCP_LISTEN:
		if ti.Unacked > 0 {
			return 0, refuse("%d connection(s) in its accept queue, not yet accepted (%s)", ti.Unacked, it.waiting(s))
		}
		if half := it.halfOpen(s); half != "" {
			return 0, refuse("half-open connections (SYN_RECV) from %s", half)
		}
		ie.Backlog = proto.Uint32(ti.Sacked) // sk_max_ack_backlog: what listen() was given, capped at somaxconn
	case p == unix.IPPROTO_TCP && s.state == kabi.TCP_CLOSE:
		if ti.Segs_out != 0 || ti.Segs_in != 0 {
			// A connection reset by its peer, or ended, whose unread data
			// and pending error no repair mode can put back.
			return 0, refuse("a closed connection (%d segments sent, %d received; reset or ended, its unread data and error not restorable)", ti.Segs_out, ti.Segs_in)
		}
	case p == unix.IPPROTO_TCP && connected(s.state):
		conn := "an established TCP connection"
		if s.state != kabi.TCP_ESTABLISHED {
			conn = fmt.Sprintf("a half-closed TCP connection (%s)", tcpStateName(s.state))
		}
		if !dd.opts.TCPEstablished && !dd.opts.TCPClose {
			return 0, refuse("%s (dump it with --tcp-established)", conn)
		}
		if err := it.load(); err != nil {
			return 0, err
		}
		switch d := it.byIno[uint32(e.Stat.Ino)]; {
		case d == nil:
			return 0, refuse("%s that sock_diag does not list", conn)
		case d.Shutdown != finShutdown(s.state):
			return 0, refuse("%s shut down for %s, which cryo does not restore yet", conn, shutdownName(d.Shutdown&^finShutdown(s.state)))
		}
		ie.DstPort = proto.Uint32(uint32(s.dst.Port()))
		ie.DstAddr = addrWords(s.dst.Addr())
	case p == unix.IPPROTO_TCP && (s.state == kabi.TCP_FIN_WAIT1 || s.state == kabi.TCP_LAST_ACK || s.state == kabi.TCP_CLOSING):
		return 0, refuse("a closing TCP connection (%s: its FIN not yet acknowledged), which cryo does not restore yet", tcpStateName(s.state))
	case p == unix.IPPROTO_TCP:
		return 0, refuse("TCP state %s", tcpStateName(s.state))
	case s.state == kabi.TCP_ESTABLISHED:
		ie.DstPort = proto.Uint32(uint32(s.dst.Port()))
		ie.DstAddr = addrWords(s.dst.Addr())
	}
	queued := false
	if p == unix.IPPROTO_UDP && (s.src.Port() != 0 || s.state == kabi.TCP_ESTABLISHED) {
		if err := it.load(); err != nil {
			return 0, err
		}
		d := it.byIno[uint32(e.Stat.Ino)]
		switch {
		case d == nil:
			return 0, refuse("not among the sockets sock_diag lists")
		case d.RQueue != 0:
			queued = true // read once its options are known (udp.go)
		case d.WQueue != 0:
			return 0, refuse("data not yet sent (%d bytes; UDP_CORK or MSG_MORE)", d.WQueue)
		}
		ie.Shutdown = skopts.SkShutdown(d.Shutdown & 3).Enum()
	}
	if e.Flags&unix.O_ASYNC != 0 {
		return 0, refuse("O_ASYNC (signal-driven I/O), whose owner is not recorded")
	}
	if fl := e.Flags &^ (unix.O_RDWR | unix.O_NONBLOCK); fl != 0 {
		return 0, refuse("file status flags %#o", fl)
	}
	// A pending error (an ICMP error on a connected UDP socket, a reset)
	// is told by POLLERR; SO_ERROR would tell which, but reading it
	// clears it, and so does nothing put it back.
	pfd := []unix.PollFd{{Fd: int32(fd)}}
	if n, err := unix.Poll(pfd, 0); err == nil && n > 0 && pfd[0].Revents&unix.POLLERR != 0 {
		return 0, refuse("a pending socket error (SO_ERROR, or the error queue), which cannot be read without being cleared")
	}
	// The socket's owner (its inode's uid and gid, which sk_uid copies)
	// is the fsuid and fsgid of whoever made it. The image has no field
	// for it: restore makes the socket with the process's own, which must
	// then be the ones it has.
	st := it.status[e.Pid]
	if st == nil {
		if st, err = procfs.StatusPid(e.Pid); err != nil {
			return 0, err
		}
		it.status[e.Pid] = st
	}
	if e.Stat.Uid != st.Uid[3] || e.Stat.Gid != st.Gid[3] {
		return 0, refuse("owned by uid %d gid %d, made before the process changed to fsuid %d fsgid %d", e.Stat.Uid, e.Stat.Gid, st.Uid[3], st.Gid[3])
	}
	def, err := it.defaults(s)
	if err != nil {
		return 0, err
	}
	if err := inetOpts(fd, s, ie, def); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if p == unix.IPPROTO_TCP && connected(s.state) && !dd.opts.TCPClose {
		if err := it.addConn(dd, e.Pid, fd, ie, s, what); err != nil {
			return 0, err
		}
	}
	var q []udpDatagram
	if queued {
		if q, err = peekUDP(fd, ie); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	id := dd.Add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Isk: ie})
	if len(q) > 0 {
		it.udpq = append(it.udpq, udpQueue{ID: id, Datagrams: q})
	}
	return id, nil
}

// sameNetns refuses a socket of another network namespace than cryo's:
// sock_diag and the new sockets that options are compared with are
// cryo's, and restore makes sockets in the process's namespace. The
// socket's own namespace is asked (SIOCGSKNS: a socket stays in the one it
// was made in, whatever its process joined later), and the process's too.
func (it *inetDump) sameNetns(pid, fd int) error {
	if it.myNs == nil {
		it.myNs = &unix.Stat_t{}
		if err := unix.Stat("/proc/self/ns/net", it.myNs); err != nil {
			it.myNs = nil
			return err
		}
	}
	mine := *it.myNs
	var theirs unix.Stat_t
	ok, seen := it.netns[pid]
	if !seen {
		if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &theirs); err != nil {
			return err
		}
		ok = mine.Dev == theirs.Dev && mine.Ino == theirs.Ino
		it.netns[pid] = ok
	}
	if !ok {
		return fmt.Errorf("its process is in a network namespace other than cryo's: %w", errs.ErrNotSupported)
	}
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if errors.Is(err, unix.EPERM) {
		// SIOCGSKNS needs CAP_NET_ADMIN (a dump as an ordinary user):
		// sock_diag, which answers about cryo's namespace, lists every
		// socket that is bound there.
		if err := it.load(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if it.byIno[uint32(st.Ino)] == nil {
			return fmt.Errorf("its network namespace cannot be told (SIOCGSKNS needs CAP_NET_ADMIN, and sock_diag does not list it): %w", errs.ErrNotSupported)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("its network namespace (SIOCGSKNS): %w", err)
	}
	err = unix.Fstat(ns, &theirs)
	unix.Close(ns)
	if err != nil {
		return err
	}
	if mine.Dev != theirs.Dev || mine.Ino != theirs.Ino {
		return fmt.Errorf("made in a network namespace other than its process's: %w", errs.ErrNotSupported)
	}
	return nil
}

// load asks sock_diag for every TCP and UDP socket, once.
func (it *inetDump) load() error {
	if it.byIno != nil {
		return nil
	}
	c, err := sockdiag.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, p := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			s, err := c.Inet(family, p, 0)
			if err != nil {
				return err
			}
			it.diag = append(it.diag, s...)
		}
	}
	it.byIno = map[uint32]*sockdiag.Inet{}
	for i := range it.diag {
		if d := &it.diag[i]; d.Inode != 0 {
			it.byIno[d.Inode] = d
		}
	}
	return nil
}

// children lists the connections of listener s that no fd holds yet, in
// the given states, by their peer.
func (it *inetDump) children(s *inetSock, states ...uint8) string {
	if err := it.load(); err != nil {
		return err.Error()
	}
	var out []string
	for _, d := range it.diag {
		if d.Inode != 0 || d.Protocol != unix.IPPROTO_TCP || d.Src.Port() != s.src.Port() {
			continue
		}
		if !s.src.Addr().IsUnspecified() && d.Src.Addr() != s.src.Addr() {
			continue
		}
		for _, st := range states {
			if d.State == st {
				out = append(out, d.Dst.String())
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "from " + strings.Join(out, ", ")
}

func (it *inetDump) waiting(s *inetSock) string {
	if w := it.children(s, kabi.TCP_ESTABLISHED, kabi.TCP_CLOSE_WAIT); w != "" {
		return w
	}
	return "sock_diag lists none of them"
}

func (it *inetDump) halfOpen(s *inetSock) string {
	return it.children(s, kabi.TCP_SYN_RECV, kabi.TCP_NEW_SYN_RECV)
}

// addrPort converts a socket address; the scope id of an IPv6 address is
// returned apart (an address with one is bound to an interface).
func addrPort(sa unix.Sockaddr) (netip.AddrPort, uint32, error) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), 0, nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), a.ZoneId, nil
	}
	return netip.AddrPort{}, 0, fmt.Errorf("socket address of type %T", sa)
}

// addrWords is an address as CRIU's image holds it: the bytes of the
// address in network order, as 32-bit words of the machine (it copies the
// in_addr or in6_addr over an array of u32).
func addrWords(a netip.Addr) []uint32 {
	b := a.AsSlice()
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return w
}

// imageAddr is addrWords' inverse; the zero AddrPort if the words are not
// 1 or 4.
func imageAddr(w []uint32, port uint32) netip.AddrPort {
	b := make([]byte, 4*len(w))
	for i, x := range w {
		binary.NativeEndian.PutUint32(b[i*4:], x)
	}
	a, ok := netip.AddrFromSlice(b)
	if !ok || port > 0xffff {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, uint16(port))
}

func inetProtoName(p int) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_UDPLITE:
		return "udplite"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	case unix.IPPROTO_MPTCP:
		return "mptcp"
	}
	return "protocol " + strconv.Itoa(p)
}

var tcpStates = map[int]string{
	kabi.TCP_ESTABLISHED: "ESTABLISHED", kabi.TCP_SYN_SENT: "SYN_SENT", kabi.TCP_SYN_RECV: "SYN_RECV",
	kabi.TCP_FIN_WAIT1: "FIN_WAIT1", kabi.TCP_FIN_WAIT2: "FIN_WAIT2", kabi.TCP_TIME_WAIT: "TIME_WAIT",
	kabi.TCP_CLOSE: "CLOSE", kabi.TCP_CLOSE_WAIT: "CLOSE_WAIT", kabi.TCP_LAST_ACK: "LAST_ACK",
	kabi.TCP_LISTEN: "LISTEN", kabi.TCP_CLOSING: "CLOSING", kabi.TCP_NEW_SYN_RECV: "NEW_SYN_RECV",
}

func tcpStateName(s int) string {
	if n, ok := tcpStates[s]; ok {
		return n
	}
	return "state " + strconv.Itoa(s)
}

// sockOpt is one integer socket option.
type sockOpt struct {
	level, opt int
	name       string
}

// compared are the options the image does not keep: each must be as a new
// socket has it. An option neither socket answers (not of this family or
// protocol) is skipped. Left out, as state the kernel keeps rather than
// the program's choice: SO_INCOMING_CPU, SO_ACCEPTCONN, SO_ERROR (reading
// it clears it), TCP_INFO and the like.
var compared = []sockOpt{
	{unix.SOL_SOCKET, unix.SO_SNDLOWAT, "SO_SNDLOWAT"},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMP, "SO_TIMESTAMP"},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, "SO_TIMESTAMPNS"},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMPING, "SO_TIMESTAMPING"},
	{unix.SOL_SOCKET, unix.SO_BUSY_POLL, "SO_BUSY_POLL"},
	{unix.SOL_SOCKET, unix.SO_PREFER_BUSY_POLL, "SO_PREFER_BUSY_POLL"},
	{unix.SOL_SOCKET, unix.SO_BUSY_POLL_BUDGET, "SO_BUSY_POLL_BUDGET"},
	{unix.SOL_SOCKET, unix.SO_ZEROCOPY, "SO_ZEROCOPY"},
	{unix.SOL_SOCKET, unix.SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE"},
	{unix.SOL_SOCKET, unix.SO_WIFI_STATUS, "SO_WIFI_STATUS"},
	{unix.SOL_SOCKET, unix.SO_RXQ_OVFL, "SO_RXQ_OVFL"},
	{unix.SOL_SOCKET, unix.SO_TXREHASH, "SO_TXREHASH"},
	{unix.SOL_SOCKET, unix.SO_RCVMARK, "SO_RCVMARK"},
	{unix.SOL_SOCKET, unix.SO_PASSPIDFD, "SO_PASSPIDFD"},
	{unix.SOL_SOCKET, unix.SO_PEEK_OFF, "SO_PEEK_OFF"},
	{unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, "SO_MAX_PACING_RATE"},
	{unix.SOL_SOCKET, unix.SO_LOCK_FILTER, "SO_LOCK_FILTER"},
	{unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, "SO_BINDTODEVICE"},
	{unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"},
	{unix.SOL_IP, unix.IP_RECVERR, "IP_RECVERR"},
	{unix.SOL_IP, unix.IP_RECVERR_RFC4884, "IP_RECVERR_RFC4884"},
	{unix.SOL_IP, unix.IP_MTU_DISCOVER, "IP_MTU_DISCOVER"},
	{unix.SOL_IP, unix.IP_MULTICAST_TTL, "IP_MULTICAST_TTL"},
	{unix.SOL_IP, unix.IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP"},
	{unix.SOL_IP, unix.IP_MULTICAST_ALL, "IP_MULTICAST_ALL"},
	{unix.SOL_IP, unix.IP_MULTICAST_IF, "IP_MULTICAST_IF"},
	{unix.SOL_IP, unix.IP_RECVTOS, "IP_RECVTOS"},
	{unix.SOL_IP, unix.IP_RECVTTL, "IP_RECVTTL"},
	{unix.SOL_IP, unix.IP_RECVOPTS, "IP_RECVOPTS"},
	{unix.SOL_IP, unix.IP_RETOPTS, "IP_RETOPTS"},
	{unix.SOL_IP, unix.IP_NODEFRAG, "IP_NODEFRAG"},
	{unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT"},
	{unix.SOL_IP, unix.IP_CHECKSUM, "IP_CHECKSUM"},
	{unix.SOL_IP, unix.IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"},
	{unix.SOL_IP, unix.IP_PASSSEC, "IP_PASSSEC"},
	{unix.SOL_IP, unix.IP_MINTTL, "IP_MINTTL"},
	{unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, "IP_LOCAL_PORT_RANGE"},
	{unix.SOL_IP, unix.IP_RECVFRAGSIZE, "IP_RECVFRAGSIZE"},
	{unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"},
	{unix.SOL_IPV6, unix.IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"},
	{unix.SOL_IPV6, unix.IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP"},
	{unix.SOL_IPV6, unix.IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF"},
	{unix.SOL_IPV6, unix.IPV6_MULTICAST_ALL, "IPV6_MULTICAST_ALL"},
	{unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"},
	{unix.SOL_IPV6, unix.IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"},
	{unix.SOL_IPV6, unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS"},
	{unix.SOL_IPV6, unix.IPV6_RECVRTHDR, "IPV6_RECVRTHDR"},
	{unix.SOL_IPV6, unix.IPV6_RECVHOPOPTS, "IPV6_RECVHOPOPTS"},
	{unix.SOL_IPV6, unix.IPV6_RECVDSTOPTS, "IPV6_RECVDSTOPTS"},
	{unix.SOL_IPV6, unix.IPV6_RECVPATHMTU, "IPV6_RECVPATHMTU"},
	{unix.SOL_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS"},
	{unix.SOL_IPV6, unix.IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"},
	{unix.SOL_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR"},
	{unix.SOL_IPV6, unix.IPV6_RECVERR_RFC4884, "IPV6_RECVERR_RFC4884"},
	{unix.SOL_IPV6, unix.IPV6_DONTFRAG, "IPV6_DONTFRAG"},
	{unix.SOL_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"},
	{unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"},
	{unix.SOL_IPV6, unix.IPV6_AUTOFLOWLABEL, "IPV6_AUTOFLOWLABEL"},
	{unix.SOL_IPV6, unix.IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR"},
	{unix.SOL_IPV6, unix.IPV6_ADDR_PREFERENCES, "IPV6_ADDR_PREFERENCES"},
	{unix.SOL_IPV6, unix.IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT"},
	{unix.SOL_IPV6, unix.IPV6_RECVFRAGSIZE, "IPV6_RECVFRAGSIZE"},
	{unix.IPPROTO_TCP, unix.TCP_MAXSEG, "TCP_MAXSEG"},
	{unix.IPPROTO_TCP, unix.TCP_SYNCNT, "TCP_SYNCNT"},
	{unix.IPPROTO_TCP, unix.TCP_LINGER2, "TCP_LINGER2"},
	{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"},
	{unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP"},
	{unix.IPPROTO_TCP, unix.TCP_QUICKACK, "TCP_QUICKACK"},
	{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
	{unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, "TCP_THIN_LINEAR_TIMEOUTS"},
	{unix.IPPROTO_TCP, unix.TCP_THIN_DUPACK, "TCP_THIN_DUPACK"},
	{unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT"},
	{unix.IPPROTO_TCP, unix.TCP_FASTOPEN, "TCP_FASTOPEN"},
	{unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, "TCP_FASTOPEN_CONNECT"},
	{unix.IPPROTO_TCP, unix.TCP_FASTOPEN_NO_COOKIE, "TCP_FASTOPEN_NO_COOKIE"},
	{unix.IPPROTO_TCP, unix.TCP_SAVE_SYN, "TCP_SAVE_SYN"},
	{unix.IPPROTO_TCP, unix.TCP_TX_DELAY, "TCP_TX_DELAY"},
	{unix.IPPROTO_TCP, unix.TCP_INQ, "TCP_INQ"},
	{unix.IPPROTO_TCP, unix.TCP_REPAIR, "TCP_REPAIR"},
	{unix.IPPROTO_UDP, unix.UDP_CORK, "UDP_CORK"},
	{unix.IPPROTO_UDP, unix.UDP_ENCAP, "UDP_ENCAP"},
	{unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_TX, "UDP_NO_CHECK6_TX"},
	{unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, "UDP_NO_CHECK6_RX"},
	{unix.IPPROTO_UDP, unix.UDP_SEGMENT, "UDP_SEGMENT"},
	{unix.IPPROTO_UDP, unix.UDP_GRO, "UDP_GRO"},
}

// connState are the options of compared whose value, once a TCP
// connection is established, is the connection's state rather than what
// the program set: the MSS in use (TCP repair restores the clamp), the
// window clamp the buffers gave, whether ACKs are delayed; and
// IP_MULTICAST_TTL, IPV6_MULTICAST_HOPS and IPV6_MULTICAST_IF, which an
// accepted connection has from the SYN that made it (its TTL, its
// interface: tcp_v[46]_syn_recv_sock) and which nothing can set on a
// stream socket, nor use: the restored one has a new socket's.
var connState = map[sockOpt]bool{
	{unix.IPPROTO_TCP, unix.TCP_MAXSEG, "TCP_MAXSEG"}: true, {unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP"}: true,
	{unix.IPPROTO_TCP, unix.TCP_QUICKACK, "TCP_QUICKACK"}: true, {unix.SOL_IP, unix.IP_MULTICAST_TTL, "IP_MULTICAST_TTL"}: true,
	{unix.SOL_IPV6, unix.IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"}: true, {unix.SOL_IPV6, unix.IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF"}: true,
}

// comparedStrings are the string options compared the same way.
var comparedStrings = []sockOpt{
	{unix.IPPROTO_TCP, unix.TCP_CONGESTION, "TCP_CONGESTION"},
	{unix.IPPROTO_TCP, unix.TCP_ULP, "TCP_ULP"},
	{unix.SOL_IP, unix.IP_OPTIONS, "IP_OPTIONS"},
}

// keptBools are the on/off options the image keeps.
var keptBools = []struct {
	sockOpt
	field func(e *skinet.InetSkEntry) **bool
}{
	{sockOpt{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.Reuseaddr }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoReuseport }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoKeepalive }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_DONTROUTE, "SO_DONTROUTE"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoDontroute }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_NO_CHECK, "SO_NO_CHECK"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoNoCheck }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_BROADCAST, "SO_BROADCAST"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoBroadcast }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_PASSCRED, "SO_PASSCRED"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoPasscred }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_PASSSEC, "SO_PASSSEC"}, func(e *skinet.InetSkEntry) **bool { return &e.Opts.SoPasssec }},
	{sockOpt{unix.SOL_IP, unix.IP_FREEBIND, "IP_FREEBIND"}, func(e *skinet.InetSkEntry) **bool { return &e.IpOpts.Freebind }},
	{sockOpt{unix.SOL_IP, unix.IP_PKTINFO, "IP_PKTINFO"}, func(e *skinet.InetSkEntry) **bool { return &e.IpOpts.Pktinfo }},
	{sockOpt{unix.SOL_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY"}, func(e *skinet.InetSkEntry) **bool { return &e.V6Only }},
	{sockOpt{unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY"}, func(e *skinet.InetSkEntry) **bool { return &e.TcpOpts.Nodelay }},
	{sockOpt{unix.IPPROTO_TCP, unix.TCP_CORK, "TCP_CORK"}, func(e *skinet.InetSkEntry) **bool { return &e.TcpOpts.Cork }},
}

// keptInts are the integer options the image keeps, in the order restore
// sets them: IP_TOS before SO_PRIORITY, since setting IP_TOS also sets the
// priority (to rt_tos2priority of it).
var keptInts = []struct {
	sockOpt
	field func(e *skinet.InetSkEntry) **uint32
}{
	{sockOpt{unix.SOL_IP, unix.IP_TOS, "IP_TOS"}, func(e *skinet.InetSkEntry) **uint32 { return &e.IpOpts.Tos }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_PRIORITY, "SO_PRIORITY"}, func(e *skinet.InetSkEntry) **uint32 { return &e.Opts.SoPriority }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_RCVLOWAT, "SO_RCVLOWAT"}, func(e *skinet.InetSkEntry) **uint32 { return &e.Opts.SoRcvlowat }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_MARK, "SO_MARK"}, func(e *skinet.InetSkEntry) **uint32 { return &e.Opts.SoMark }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_OOBINLINE, "SO_OOBINLINE"}, func(e *skinet.InetSkEntry) **uint32 { return &e.Opts.SoOobinline }},
	{sockOpt{unix.SOL_SOCKET, unix.SO_BUF_LOCK, "SO_BUF_LOCK"}, func(e *skinet.InetSkEntry) **uint32 { return &e.Opts.SoBufLock }},
	{sockOpt{unix.SOL_IP, unix.IP_TTL, "IP_TTL"}, func(e *skinet.InetSkEntry) **uint32 { return &e.IpOpts.Ttl }},
	{sockOpt{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT"}, func(e *skinet.InetSkEntry) **uint32 { return &e.TcpOpts.Keepcnt }},
	{sockOpt{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE"}, func(e *skinet.InetSkEntry) **uint32 { return &e.TcpOpts.Keepidle }},
	{sockOpt{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL"}, func(e *skinet.InetSkEntry) **uint32 { return &e.TcpOpts.Keepintvl }},
}

// applies says whether option o exists for a socket of s's family and
// protocol.
func applies(o sockOpt, family, p int) bool {
	switch o.level {
	case unix.SOL_IPV6:
		return family == unix.AF_INET6
	case unix.IPPROTO_TCP:
		return p == unix.IPPROTO_TCP
	case unix.IPPROTO_UDP:
		return p == unix.IPPROTO_UDP
	}
	return true
}

// inetOpts fills the image's options from fd, and refuses an option the
// image cannot keep that differs from a new socket's.
func inetOpts(fd int, s *inetSock, ie *skinet.InetSkEntry, def *sockDefaults) error {
	established := s.proto == unix.IPPROTO_TCP && connected(s.state)
	o := &skopts.SkOptsEntry{}
	for _, v := range []struct {
		opt int
		dst **uint32
	}{{unix.SO_SNDBUF, &o.SoSndbuf}, {unix.SO_RCVBUF, &o.SoRcvbuf}} {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, v.opt)
		if err != nil {
			return fmt.Errorf("getsockopt %d: %w", v.opt, err)
		}
		*v.dst = proto.Uint32(uint32(n))
	}
	for _, v := range []struct {
		opt      int
		sec, usc **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, v.opt)
		if err != nil {
			return fmt.Errorf("getsockopt %d: %w", v.opt, err)
		}
		*v.sec, *v.usc = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	ie.Opts = o
	ie.IpOpts = &skinet.IpOptsEntry{}
	if s.proto == unix.IPPROTO_TCP {
		ie.TcpOpts = &tcpstream.TcpOptsEntry{}
	}
	for _, k := range keptBools {
		if !applies(k.sockOpt, s.family, s.proto) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, k.level, k.opt)
		if notOption(err) {
			continue // SO_PASSCRED and SO_PASSSEC: only unix and netlink sockets have them since Linux 6.16
		}
		if err != nil {
			return fmt.Errorf("getsockopt %s: %w", k.name, err)
		}
		*k.field(ie) = proto.Bool(v != 0)
	}
	for _, k := range keptInts {
		if !applies(k.sockOpt, s.family, s.proto) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, k.level, k.opt)
		if err != nil {
			return fmt.Errorf("getsockopt %s: %w", k.name, err)
		}
		*k.field(ie) = proto.Uint32(uint32(v))
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return fmt.Errorf("getsockopt SO_LINGER: %w", err)
	}
	if l.Onoff != 0 {
		ie.Opts.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	if err != nil {
		return fmt.Errorf("getsockopt SO_BINDTODEVICE: %w", err)
	}
	if dev != "" {
		return fmt.Errorf("bound to device %s (SO_BINDTODEVICE): %w", dev, errs.ErrNotSupported)
	}
	n, err := kabi.SocketFilterLen(fd)
	if errors.Is(err, unix.EACCES) {
		return fmt.Errorf("an eBPF socket filter (SO_ATTACH_BPF): %w", errs.ErrNotSupported)
	}
	if err != nil {
		return fmt.Errorf("getsockopt SO_GET_FILTER: %w", err)
	}
	if n != 0 {
		return fmt.Errorf("a socket filter of %d instructions (SO_ATTACH_FILTER): %w", n, errs.ErrNotSupported)
	}
	for i, c := range compared {
		if !applies(c, s.family, s.proto) || (established && connState[c]) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, c.level, c.opt)
		w, werr := def.ints[i].v, def.ints[i].err
		if err != nil && werr != nil {
			continue // not an option of this socket
		}
		if err != nil || werr != nil || v != w {
			return fmt.Errorf("option %s is %s, a new socket's is %s, and the image cannot keep it: %w", c.name, optString(v, err), optString(w, werr), errs.ErrNotSupported)
		}
	}
	for i, c := range comparedStrings {
		if !applies(c, s.family, s.proto) {
			continue
		}
		v, err := unix.GetsockoptString(fd, c.level, c.opt)
		w, werr := def.strs[i].v, def.strs[i].err
		if err != nil && werr != nil {
			continue
		}
		if err != nil || werr != nil || v != w {
			return fmt.Errorf("option %s is %q, a new socket's is %q, and the image cannot keep it: %w", c.name, v, w, errs.ErrNotSupported)
		}
	}
	// Buffer sizes the program did not set follow the sysctls (and, for
	// TCP, autotuning): they come back as a new socket has them, which
	// must be what this one has; but an established connection's, which
	// come back as they are (setInetOpts).
	lock := ie.Opts.GetSoBufLock()
	for _, b := range []struct {
		name     string
		bit      uint32
		val, def uint32
	}{{"SO_SNDBUF", unix.SOCK_SNDBUF_LOCK, o.GetSoSndbuf(), def.sndbuf}, {"SO_RCVBUF", unix.SOCK_RCVBUF_LOCK, o.GetSoRcvbuf(), def.rcvbuf}} {
		if lock&b.bit == 0 && b.val != b.def && !established {
			return fmt.Errorf("%s is %d, not set by the program, and a new socket's is %d: %w", b.name, b.val, b.def, errs.ErrNotSupported)
		}
	}
	return nil
}

// sockDefaults are the options of a new socket of one family, type and
// protocol, which the dump's sockets are compared with: read once per dump.
type sockDefaults struct {
	ints []struct {
		v   int
		err error
	} // by index in compared
	strs []struct {
		v   string
		err error
	}
	sndbuf, rcvbuf uint32
}

// defaults returns the options of a new socket like s, made in cryo's
// network namespace (the dump's sockets are checked to be in it).
func (it *inetDump) defaults(s *inetSock) (*sockDefaults, error) {
	key := [3]int{s.family, s.typ, s.proto}
	if d := it.defs[key]; d != nil {
		return d, nil
	}
	fresh, err := unix.Socket(s.family, s.typ|unix.SOCK_CLOEXEC, s.proto)
	if err != nil {
		return nil, fmt.Errorf("a new %s socket to compare options with: %w", inetProtoName(s.proto), err)
	}
	defer unix.Close(fresh)
	d := &sockDefaults{}
	d.ints = make([]struct {
		v   int
		err error
	}, len(compared))
	for i, c := range compared {
		d.ints[i].v, d.ints[i].err = unix.GetsockoptInt(fresh, c.level, c.opt)
	}
	d.strs = make([]struct {
		v   string
		err error
	}, len(comparedStrings))
	for i, c := range comparedStrings {
		d.strs[i].v, d.strs[i].err = unix.GetsockoptString(fresh, c.level, c.opt)
	}
	for _, b := range []struct {
		opt int
		dst *uint32
	}{{unix.SO_SNDBUF, &d.sndbuf}, {unix.SO_RCVBUF, &d.rcvbuf}} {
		v, err := unix.GetsockoptInt(fresh, unix.SOL_SOCKET, b.opt)
		if err != nil {
			return nil, err
		}
		*b.dst = uint32(v)
	}
	it.defs[key] = d
	return d, nil
}

// notOption says whether err is how getsockopt answers for an option the
// socket does not have.
func notOption(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT)
}

func optString(v int, err error) string {
	if err != nil {
		return "unreadable (" + err.Error() + ")"
	}
	return strconv.Itoa(v)
}

// Restore.

// inetOpen is the restore half.
type inetOpen struct {
	// sameIDs says, by pid, whether the process already has the fsuid
	// and fsgid its sockets need (no switch around socket()).
	sameIDs map[int]bool
	// streams are the image's established connections, by socket inode
	// (tcp.go); conns those made so far, in repair mode until ResumeTCP.
	streams map[uint32]*tcpStream
	conns   []*restoredConn
	// udpq are the datagrams each UDP socket had not read (udp.go).
	udpq map[uint32][]udpDatagram
	r    *Restorer
}

// loadSide refuses, before anything is made, an image with established
// connections that the restore was not asked to bring back, and reads
// their queues.
func (u *inetOpen) loadSide(r *Restorer) error {
	u.r, u.streams = r, map[uint32]*tcpStream{}
	var err error
	if u.udpq, err = loadUDPQueues(r.set.Dir); err != nil {
		return err
	}
	if r.set.Inventory.GetTcpClose() && !r.opts.TCPClose {
		return fmt.Errorf("the image was dumped with --tcp-close, without its connections' state: restore it with --tcp-close: %w", errs.ErrNotSupported)
	}
	for _, f := range r.set.Files {
		e := f.GetIsk()
		if f.GetType() != fdinfo.FdTypes_INETSK || e == nil || !isTCPConn(e) {
			continue
		}
		if !r.opts.TCPEstablished && !r.opts.TCPClose {
			l, rm := connAddrs(e)
			return fmt.Errorf("socket:[%d] is an established TCP connection (%s to %s): restore it with --tcp-established (or --tcp-close): %w", e.GetIno(), l, rm, errs.ErrNotSupported)
		}
		if r.opts.TCPClose {
			continue
		}
		s, err := loadTCPStream(r.set.Dir, e.GetIno())
		if err != nil {
			return err
		}
		u.streams[e.GetIno()] = s
	}
	return nil
}

func (u *inetOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetIsk()
	if e == nil {
		return 0, corrupt("inet socket entry %d without its inet_sk_entry", f.GetId())
	}
	family, typ, pr, state := int(e.GetFamily()), int(e.GetType()), int(e.GetProto()), int(e.GetState())
	what := fmt.Sprintf("socket:[%d] (%s)", e.GetIno(), Describe(f).Path)
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return 0, corrupt("%s: family %d", what, family)
	}
	switch {
	case typ == unix.SOCK_STREAM && pr == unix.IPPROTO_TCP && (state == kabi.TCP_LISTEN || state == kabi.TCP_CLOSE):
	case typ == unix.SOCK_STREAM && pr == unix.IPPROTO_TCP && connected(state):
	case typ == unix.SOCK_DGRAM && pr == unix.IPPROTO_UDP && (state == kabi.TCP_ESTABLISHED || state == kabi.TCP_CLOSE):
	default:
		return 0, fmt.Errorf("%s: type %d, protocol %d, state %s: %w", what, typ, pr, tcpStateName(state), errs.ErrNotSupported)
	}
	src, err := entryAddr(family, e.GetSrcAddr(), e.GetSrcPort())
	if err != nil {
		return 0, corrupt("%s: source address: %v", what, err)
	}
	var dst []byte
	if state == kabi.TCP_ESTABLISHED || (pr == unix.IPPROTO_TCP && connected(state)) {
		if dst, err = entryAddr(family, e.GetDstAddr(), e.GetDstPort()); err != nil {
			return 0, corrupt("%s: destination address: %v", what, err)
		}
	}
	if e.GetFlags()&^uint32(unix.O_RDWR|unix.O_NONBLOCK) != 0 {
		return 0, fmt.Errorf("%s: file flags %#x: %w", what, e.GetFlags(), errs.ErrNotSupported)
	}
	fd, cp, err := u.ownedSocket(r, p, family, typ, pr)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	defer unix.Close(cp)
	conn := pr == unix.IPPROTO_TCP && connected(state)
	stream := u.streams[e.GetIno()]
	if conn && stream == nil && !r.opts.TCPClose {
		return 0, fmt.Errorf("%s: no tcp-stream image loaded", what)
	}
	if err := setInetOpts(cp, e, stream != nil); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if conn {
		// Repair mode lets the socket share its port with anything (the
		// listener that accepted it, a peer's side): SO_REUSEADDR is
		// not set over it.
		if err := repairBefore(cp, what); err != nil {
			return 0, err
		}
	}
	port := imageAddr(e.GetSrcAddr(), e.GetSrcPort())
	if port.Port() != 0 || !port.Addr().IsUnspecified() {
		// Not for UDP: there SO_REUSEADDR would let the socket share a
		// port another program took meanwhile, where bind must fail.
		if pr == unix.IPPROTO_TCP && !conn {
			if err := unix.SetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return 0, fmt.Errorf("%s: SO_REUSEADDR: %w", what, err)
			}
		}
		a, err := p.Arg(src)
		if err != nil {
			return 0, err
		}
		if _, err := p.Call("bind "+port.String(), unix.SYS_BIND, fd, a, uint64(len(src))); err != nil {
			return 0, err
		}
	}
	if state == kabi.TCP_LISTEN {
		if _, err := p.Call("listen", unix.SYS_LISTEN, fd, uint64(e.GetBacklog())); err != nil {
			return 0, err
		}
	}
	if stream != nil {
		if err := repairSeqs(cp, stream, state); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	if dst != nil {
		a, err := p.Arg(dst)
		if err != nil {
			return 0, err
		}
		if _, err := p.Call("connect "+imageAddr(e.GetDstAddr(), e.GetDstPort()).String(), unix.SYS_CONNECT, fd, a, uint64(len(dst))); err != nil {
			return 0, err
		}
	}
	switch {
	case stream != nil:
		if err := repairAfter(cp, stream, state); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		keep, err := unix.FcntlInt(uintptr(cp), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("%s: keep a copy: %w", what, err)
		}
		u.conns = append(u.conns, &restoredConn{cp: keep, what: what, e: e, s: stream, unsent: stream.outq[len(stream.outq)-int(stream.st.GetUnsqLen()):]})
	case conn:
		if err := abortConn(p, fd); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			return 0, fmt.Errorf("%s: TCP_REPAIR off: %w", what, err)
		}
	}
	// A connection in repair mode keeps sharing its port with anything
	// until the tree runs (ResumeTCP sets SO_REUSEADDR then): the
	// listener it came from may be bound after it.
	if stream == nil {
		if err := setIfDiffers(cp, sockOpt{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"}, boolInt(e.GetOpts().GetReuseaddr())); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	if q := u.udpq[f.GetId()]; len(q) > 0 {
		if pr != unix.IPPROTO_UDP {
			return 0, corrupt("%s: datagrams queued on a socket of protocol %d", what, pr)
		}
		if err := queueDatagrams(cp, q); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	if how := e.GetShutdown(); how != 0 {
		if err := unix.Shutdown(cp, int(how)-1); err != nil && !errors.Is(err, unix.ENOTCONN) {
			return 0, fmt.Errorf("%s: shutdown: %w", what, err)
		}
	}
	if e.GetFlags()&unix.O_NONBLOCK != 0 {
		if _, err := unix.FcntlInt(uintptr(cp), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
			return 0, fmt.Errorf("%s: O_NONBLOCK: %w", what, err)
		}
	}
	return fd, nil
}

// ownedSocket makes a socket in p owned by the process's fsuid and fsgid
// as the image has them (see the dump's check), setting them around the
// socket() call, and returns it and cryo's copy of it. A restorer that may
// not take those ids (setfsuid fails without saying so) fails here, not
// with a socket of another owner.
func (u *inetOpen) ownedSocket(r *Restorer, p Proc, family, typ, pr int) (uint64, int, error) {
	var uid, gid uint64
	found := false
	for _, ip := range r.set.Procs {
		if int(ip.Pid()) == p.Pid() && len(ip.Cores) > 0 {
			c := ip.Cores[0].GetThreadCore().GetCreds()
			uid, gid, found = uint64(c.GetFsuid()), uint64(c.GetFsgid()), c != nil
		}
	}
	var oldUID, oldGID uint64
	switchIDs := found && !u.sameIDs[p.Pid()]
	if switchIDs {
		var err error
		if oldGID, err = p.Call("setfsgid", unix.SYS_SETFSGID, gid); err != nil {
			return 0, -1, err
		}
		if oldUID, err = p.Call("setfsuid", unix.SYS_SETFSUID, uid); err != nil {
			return 0, -1, err
		}
		if oldUID == uid && oldGID == gid {
			// The process has them already (its restorer's are the
			// same): nothing to switch back, now or for its next
			// sockets.
			u.sameIDs[p.Pid()], switchIDs = true, false
		}
	}
	fd, err := p.Call("socket", unix.SYS_SOCKET, uint64(family), uint64(typ)|unix.SOCK_CLOEXEC, uint64(pr))
	if switchIDs {
		// Back as they were, on every path: the creds stage comes later.
		if _, err := p.Call("setfsuid", unix.SYS_SETFSUID, oldUID); err != nil {
			return 0, -1, err
		}
		if _, err := p.Call("setfsgid", unix.SYS_SETFSGID, oldGID); err != nil {
			return 0, -1, err
		}
	}
	if err != nil {
		return 0, -1, err
	}
	cp, err := kabi.GetFd(p.Pid(), int(fd))
	if err != nil {
		return 0, -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(cp, &st); err != nil {
		unix.Close(cp)
		return 0, -1, err
	}
	if found && (uint64(st.Uid) != uid || uint64(st.Gid) != gid) {
		unix.Close(cp)
		return 0, -1, fmt.Errorf("the socket is owned by uid %d gid %d, not %d %d: this restore may not make sockets for them: %w", st.Uid, st.Gid, uid, gid, errs.ErrNotSupported)
	}
	return fd, cp, nil
}

// entryAddr is the sockaddr_in or sockaddr_in6 of an image address.
func entryAddr(family int, w []uint32, port uint32) ([]byte, error) {
	ap := imageAddr(w, port)
	switch {
	case !ap.IsValid():
		return nil, fmt.Errorf("%d words, port %d", len(w), port)
	case family == unix.AF_INET && ap.Addr().Is4():
		b := make([]byte, 16)
		binary.LittleEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a := ap.Addr().As4()
		copy(b[4:], a[:])
		return b, nil
	case family == unix.AF_INET6 && ap.Addr().Is6():
		b := make([]byte, 28)
		binary.LittleEndian.PutUint16(b, unix.AF_INET6)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a := ap.Addr().As16()
		copy(b[8:], a[:])
		return b, nil
	}
	return nil, fmt.Errorf("%s for family %d", ap, family)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// setIfDiffers sets option o to v unless the socket has it already: an
// option set to its default is not always the default (IP_TTL set to 64
// no longer follows the sysctl).
func setIfDiffers(fd int, o sockOpt, v int) error {
	cur, err := unix.GetsockoptInt(fd, o.level, o.opt)
	if err != nil {
		return fmt.Errorf("getsockopt %s: %w", o.name, err)
	}
	if cur == v {
		return nil
	}
	if err := unix.SetsockoptInt(fd, o.level, o.opt, v); err != nil {
		return fmt.Errorf("setsockopt %s %d: %w", o.name, v, err)
	}
	return nil
}

// setInetOpts sets what the image keeps on a new socket, before it is
// bound (SO_REUSEPORT and IPV6_V6ONLY must be).
//
// A connection restored by TCP repair (conn) gets both buffer sizes as
// they were, autotuned or set, so that its queues fit; the buffers' locks
// go back once they are filled (ResumeTCP), and autotuning carries on.
func setInetOpts(fd int, e *skinet.InetSkEntry, conn bool) error {
	family, pr := int(e.GetFamily()), int(e.GetProto())
	if e.Opts == nil {
		return corrupt("inet socket %d without its options", e.GetIno())
	}
	if e.IpOpts == nil {
		e.IpOpts = &skinet.IpOptsEntry{}
	}
	if e.TcpOpts == nil {
		e.TcpOpts = &tcpstream.TcpOptsEntry{}
	}
	o := e.GetOpts()
	lock := o.GetSoBufLock()
	for _, b := range []struct {
		force, plain int
		bit, val     uint32
	}{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, unix.SOCK_SNDBUF_LOCK, o.GetSoSndbuf()}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, unix.SOCK_RCVBUF_LOCK, o.GetSoRcvbuf()}} {
		if lock&b.bit == 0 && !conn {
			continue // as a new socket has it (checked at dump)
		}
		if err := setBufSize(fd, b.force, b.plain, b.val); err != nil {
			return err
		}
	}
	if err := setTimeouts(fd, o); err != nil {
		return err
	}
	for _, k := range keptBools {
		if k.opt == unix.SO_REUSEADDR || !applies(k.sockOpt, family, pr) {
			continue // SO_REUSEADDR: once bound
		}
		if b := *k.field(e); b != nil {
			if err := setIfDiffers(fd, k.sockOpt, boolInt(*b)); err != nil {
				return err
			}
		}
	}
	for _, k := range keptInts {
		if !applies(k.sockOpt, family, pr) || (conn && k.opt == unix.SO_BUF_LOCK) {
			continue
		}
		if v := *k.field(e); v != nil {
			if err := setIfDiffers(fd, k.sockOpt, int(*v)); err != nil {
				return err
			}
		}
	}
	if o.SoLinger != nil {
		l := unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l); err != nil {
			return fmt.Errorf("setsockopt SO_LINGER: %w", err)
		}
	}
	if o.GetSoBoundDev() != "" || len(o.GetSoFilter()) > 0 {
		return fmt.Errorf("a bound device or socket filter: %w", errs.ErrNotSupported)
	}
	return nil
}

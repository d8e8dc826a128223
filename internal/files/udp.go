package files

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	skinet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
)

// The datagrams a UDP socket of the tree had not read yet (a DNS or
// syslog server under load has some at any instant). CRIU drops them;
// cryo puts them back, each with its sender.
//
// Dump. They are read without being taken: MSG_PEEK from a peek offset
// (SO_PEEK_OFF) that walks the queue one datagram at a time, as for UNIX
// sockets (unix.go), with the sender's address. What a program could see
// of a datagram beyond its bytes and sender is refused elsewhere when
// turned on (timestamps, TTL, TOS, the original destination, GRO: the
// options of `compared` must be a new socket's); IP_PKTINFO, which tells
// the destination address and interface, is refused here when datagrams
// are queued, and so is a socket shut down for reading. A zero-length
// datagram is refused: a peek offset cannot step over it.
//
// The image: cryo-udp-queues.json, cryo's own (CRIU's sk_packet_entry has
// no field for a sender), the datagrams of each socket by its file id.
//
// Restore. Once the socket is bound (and connected), each datagram is sent
// to it again from its own sender, through a raw socket of cryo's with a
// header written by hand (IP_HDRINCL; CAP_NET_RAW): the kernel delivers it
// locally as it delivered the first, to the same queue, in order (cryo
// sends them all from one CPU, whose backlog keeps their order). The
// queue is then read again as at dump and must hold exactly what the image
// lists, or the restore fails. What differs is only what no program can
// read: the memory the kernel charges each datagram (sk_rmem_alloc).

// udpDatagram is one queued datagram: its sender and its bytes.
type udpDatagram struct {
	From netip.AddrPort `json:"from"`
	Data []byte         `json:"data"`
}

// udpQueue is the queued datagrams of one socket, by its file id.
type udpQueue struct {
	ID        uint32        `json:"id"`
	Datagrams []udpDatagram `json:"datagrams"`
}

// maxUDPQueue bounds the bytes of one socket's queue read at dump: far
// above any receive buffer the kernel lets a socket have by default.
const maxUDPQueue = 256 << 20

// peekUDP reads the queue of the UDP socket fd for the image, refusing
// what its datagrams would carry that a restore cannot give back.
func peekUDP(fd int, ie *skinet.InetSkEntry) ([]udpDatagram, error) {
	if ie.GetIpOpts().GetPktinfo() {
		return nil, fmt.Errorf("datagrams queued on a socket with IP_PKTINFO (their destination address and interface are not recorded): %w", errs.ErrNotSupported)
	}
	if ie.GetShutdown()&1 != 0 { // READ or BOTH
		return nil, fmt.Errorf("datagrams queued on a socket shut down for reading: %w", errs.ErrNotSupported)
	}
	if fi, err := unix.GetsockoptInt(fd, unix.SOL_IPV6, kabi.IPV6_FLOWINFO); err == nil && fi != 0 {
		return nil, fmt.Errorf("datagrams queued on a socket with IPV6_FLOWINFO (their flow labels are not recorded): %w", errs.ErrNotSupported)
	}
	return peekDatagrams(fd)
}

// peekDatagrams walks the datagrams queued on fd without taking them. The
// head is peeked first without an offset: a zero-length datagram that the
// program peeked is skipped by every offset peek, so it is looked for
// there, where the program could have peeked it.
func peekDatagrams(fd int) ([]udpDatagram, error) {
	off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if off != -1 {
		return nil, fmt.Errorf("the program peeks with SO_PEEK_OFF (at %d): %w", off, errs.ErrNotSupported)
	}
	const flags = unix.MSG_PEEK | unix.MSG_DONTWAIT | unix.MSG_TRUNC
	buf := make([]byte, 64<<10)
	oob := make([]byte, 512)
	recv := func() (int, unix.Sockaddr, error) {
		for {
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, flags)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil && oobn > 0 {
				return 0, nil, fmt.Errorf("a queued datagram carries control data (%d bytes): %w", oobn, errs.ErrNotSupported)
			}
			return n, from, err
		}
	}
	n, _, err := recv()
	switch {
	case errors.Is(err, unix.EAGAIN):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("peek at the queue: %w", err)
	case n == 0:
		return nil, fmt.Errorf("a zero-length datagram in the queue: %w", errs.ErrNotSupported)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
	var out []udpDatagram
	pos := 0
	for {
		n, from, err := recv()
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("peek at datagram %d of the queue: %w", len(out)+1, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("a zero-length datagram in the queue: %w", errs.ErrNotSupported)
		}
		if n > len(buf) {
			// Larger than the buffer: read again, whole, from its start.
			buf = make([]byte, n)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, pos); err != nil {
				return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
			}
			continue
		}
		src, _, err := addrPort(from)
		if err != nil {
			return nil, fmt.Errorf("datagram %d of the queue: sender: %w", len(out)+1, err)
		}
		out = append(out, udpDatagram{From: src, Data: append([]byte(nil), buf[:n]...)})
		if pos += n; pos > maxUDPQueue {
			return nil, fmt.Errorf("more than %d bytes queued: %w", maxUDPQueue, errs.ErrNotSupported)
		}
		// A peek moves the offset past what it read; set it all the
		// same, so that the walk does not depend on it.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, pos); err != nil {
			return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
		}
	}
}

// writeUDPQueues writes cryo-udp-queues.json, if any socket had datagrams.
func (it *inetDump) writeUDPQueues(s *Side) error {
	if len(it.udpq) == 0 {
		return nil
	}
	w, err := s.Dir.CreateRaw(imageset.UDPQueuesName)
	if err != nil {
		return err
	}
	err = json.NewEncoder(w).Encode(it.udpq)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadUDPQueues reads cryo-udp-queues.json, by file id.
func loadUDPQueues(dir *image.Dir) (map[uint32][]udpDatagram, error) {
	out := map[uint32][]udpDatagram{}
	if !dir.Has(imageset.UDPQueuesName) {
		return out, nil
	}
	r, err := dir.OpenRaw(imageset.UDPQueuesName)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var qs []udpQueue
	if err := json.NewDecoder(io.LimitReader(r, 4*maxUDPQueue)).Decode(&qs); err != nil {
		return nil, &image.FormatError{File: imageset.UDPQueuesName, Err: fmt.Errorf("%v: %w", err, image.ErrImageCorrupt)}
	}
	for _, q := range qs {
		for i, d := range q.Datagrams {
			if !d.From.IsValid() || d.From.Port() == 0 || len(d.Data) == 0 || len(d.Data) > 65507 {
				return nil, &image.FormatError{File: imageset.UDPQueuesName, Err: fmt.Errorf("socket %d, datagram %d: sender %v, %d bytes: %w", q.ID, i+1, d.From, len(d.Data), image.ErrImageCorrupt)}
			}
		}
		if _, dup := out[q.ID]; dup || len(q.Datagrams) == 0 {
			return nil, &image.FormatError{File: imageset.UDPQueuesName, Err: fmt.Errorf("socket %d listed twice or empty: %w", q.ID, image.ErrImageCorrupt)}
		}
		out[q.ID] = q.Datagrams
	}
	return out, nil
}

// queueDatagrams sends ds to the restored socket cp (cryo's copy, bound,
// not yet used by its program) from their senders, and checks that its
// queue then holds exactly ds.
func queueDatagrams(cp int, ds []udpDatagram) error {
	sa, err := unix.Getsockname(cp)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	local, _, err := addrPort(sa)
	if err != nil {
		return err
	}
	raw := map[bool]int{} // by IPv4 or not
	defer func() {
		for _, fd := range raw {
			unix.Close(fd)
		}
	}()
	// One CPU for every send: a locally delivered packet waits in the
	// backlog of the CPU that sent it, and two backlogs do not keep order.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return fmt.Errorf("CPU affinity: %w", err)
	}
	for cpu := 0; cpu < len(was)*64; cpu++ {
		if was.IsSet(cpu) {
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				return fmt.Errorf("CPU affinity: %w", err)
			}
			defer unix.SchedSetaffinity(0, &was)
			break
		}
	}
	for i, d := range ds {
		src, dst := d.From.Addr().Unmap(), local.Addr().Unmap()
		if dst.IsUnspecified() {
			dst = netip.IPv6Loopback()
			if src.Is4() {
				dst = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			}
		}
		if src.Is4() != dst.Is4() {
			return fmt.Errorf("datagram %d from %v cannot reach a socket at %v: %w", i+1, d.From, local, image.ErrImageCorrupt)
		}
		fd, ok := raw[src.Is4()]
		if !ok {
			family := unix.AF_INET6
			if src.Is4() {
				family = unix.AF_INET
			}
			if fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
				if errors.Is(err, unix.EPERM) {
					return fmt.Errorf("%d queued datagram(s): sending them again from their senders needs CAP_NET_RAW: %w", len(ds), errs.ErrNotSupported)
				}
				return fmt.Errorf("raw socket: %w", err)
			}
			raw[src.Is4()] = fd
		}
		pkt, to := udpPacket(netip.AddrPortFrom(src, d.From.Port()), netip.AddrPortFrom(dst, local.Port()), d.Data)
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			return fmt.Errorf("send datagram %d from %v again: %w", i+1, d.From, err)
		}
	}
	// Delivery ends in a softirq, perhaps after the send returned.
	var got []udpDatagram
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		if got, err = peekDatagrams(cp); err != nil {
			return fmt.Errorf("read the queue again: %w", err)
		}
		if len(got) >= len(ds) || time.Now().After(deadline) {
			break
		}
	}
	if len(got) != len(ds) {
		return fmt.Errorf("%d datagram(s) queued again, %d in the image (SO_RCVBUF too small, or another sender): %w", len(got), len(ds), errs.ErrNotSupported)
	}
	for i := range ds {
		if got[i].From != ds[i].From || !bytes.Equal(got[i].Data, ds[i].Data) {
			return fmt.Errorf("datagram %d queued again from %v (%d bytes), the image's from %v (%d bytes)", i+1, got[i].From, len(got[i].Data), ds[i].From, len(ds[i].Data))
		}
	}
	return nil
}

// udpPacket builds an IP packet carrying data from src to dst in UDP, as
// a raw IPPROTO_RAW socket sends it, and the address to send it to. The
// kernel fills in the IPv4 header's checksum, length and id.
func udpPacket(src, dst netip.AddrPort, data []byte) ([]byte, unix.Sockaddr) {
	udp := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], data)
	// The checksum covers a pseudo-header: both addresses, the protocol
	// and the UDP length.
	pseudo := append(append(src.Addr().AsSlice(), dst.Addr().AsSlice()...), 0, unix.IPPROTO_UDP, byte(len(udp)>>8), byte(len(udp)))
	sum := ^fold(checksum(udp, checksum(pseudo, 0)))
	if sum == 0 {
		sum = 0xffff // 0 means none
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(udp))
		ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP // version 4, 5 words; TTL; protocol
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		return append(ip, udp...), &unix.SockaddrInet4{Addr: d4}
	}
	ip := make([]byte, 40, 40+len(udp))
	ip[0] = 0x60 // version 6
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip[6], ip[7] = unix.IPPROTO_UDP, 64 // next header; hop limit
	s16, d16 := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	return append(ip, udp...), &unix.SockaddrInet6{Addr: d16}
}

// checksum adds b, as 16-bit big-endian words, to the running sum.
func checksum(b []byte, sum uint32) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// fold folds a running sum into 16 bits, one's complement.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

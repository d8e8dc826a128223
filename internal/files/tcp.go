package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	skinet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	tcpstream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/netlock"
)

// Established TCP connections (criu's --tcp-established), and half-closed
// ones whose FINs are acknowledged (FIN_WAIT2, CLOSE_WAIT), by TCP repair:
// a socket in repair mode (TCP_REPAIR, CAP_NET_ADMIN) sends nothing of its
// own accord, shows its send queue (sent but unacknowledged, and unsent)
// and receive queue (unread) to recv with MSG_PEEK, and tells its sequence
// numbers (TCP_QUEUE_SEQ), window (TCP_REPAIR_WINDOW) and timestamp clock
// (TCP_TIMESTAMP). inet.go finds the connection and records its inetsk
// entry as for any socket; this file holds the connection part.
//
// Dump. Once every process of the tree is dumped, the dump takes the
// network lock on the tree's connections (package netlock, so that no
// packet changes them while they are read and none reaches a peer once
// the tree is gone), then puts every connection in repair mode through a
// copy of the socket cryo keeps, and reads it: tcp-stream-INO.img, CRIU's
// entry followed by the receive queue's bytes and the send queue's, as
// CRIU writes it. The copies stay in repair mode to the end: when the tree
// is killed, the last close of a repair socket sends nothing (no FIN, no
// reset) and leaves no socket behind that would hold the 4-tuple; with
// --leave-running, or when the dump fails, repair goes off again and the
// connection carries on (EndTCP).
//
// Restore. The socket is made in its process, put in repair mode, given
// its options, bound (a repair socket may share its port with anything),
// given the start of both queues, and connected, which in repair mode
// only makes it ESTABLISHED; then its TCP options (MSS, window scaling,
// SACK, timestamps), timestamp clock, receive queue, the sent part of its
// send queue and its window. Right before the tree runs (ResumeTCP)
// repair goes off, which sends a window probe, and the unsent part of the
// send queue is sent as the program had written it. A half-closed
// connection gets its FINs back before (restoreFINs). With --tcp-close a
// connection comes back aborted instead: the program's next call on it
// fails with ECONNABORTED, as after a connection lost, and nothing reaches
// the peer.
//
// Refused by name: connections whose FIN is still in flight (FIN_WAIT1,
// LAST_ACK, CLOSING), a connection being opened (SYN_SENT), one shut down
// for reading beyond its FINs, one with urgent data pending, and one whose
// queues or state changed while read (a network lock that does not hold).

// TCPConn is one established connection, as the network lock needs it.
type TCPConn = netlock.Conn

// tcpConn is one established connection of the dump.
type tcpConn struct {
	fd     int // cryo's own copy of the socket, held until the dump ends
	pid    int // the process of the tree that holds it
	ie     *skinet.InetSkEntry
	conn   TCPConn
	what   string
	repair bool // repair mode is on
	st     *tcpstream.TcpStreamEntry
	inq    []byte
	outq   []byte
}

// addConn keeps an established connection of the tree for RepairTCP.
func (it *inetDump) addConn(d *Dumper, pid, fd int, ie *skinet.InetSkEntry, s *inetSock, what string) error {
	cp, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: keep a copy: %w", what, err)
	}
	c := &tcpConn{fd: cp, pid: pid, ie: ie, conn: TCPConn{Local: s.src, Remote: s.dst}, what: what}
	it.conns = append(it.conns, c)
	d.keep(closeFd(cp))
	return nil
}

type closeFd int

func (c closeFd) Close() error { return unix.Close(int(c)) }

// TCPConns are the tree's established connections, once every process is
// dumped: what the network lock must hold before RepairTCP.
func (d *Dumper) TCPConns() []TCPConn {
	it := dumpHalf[*inetDump](d)
	out := make([]TCPConn, len(it.conns))
	for i, c := range it.conns {
		out[i] = c.conn
	}
	return out
}

// TCPGuard is one connection RepairTCP puts in repair mode: cryo's copy
// of its socket, and the program's SO_REUSEADDR, which TCP_REPAIR_OFF
// clears (package keeper guards them against a dump that dies).
type TCPGuard struct {
	Fd        int
	Pid       int // a process of the tree that holds it
	ReuseAddr bool
}

// TCPGuards lists the connections RepairTCP will put in repair mode.
func (d *Dumper) TCPGuards() []TCPGuard {
	var out []TCPGuard
	for _, c := range dumpHalf[*inetDump](d).conns {
		out = append(out, TCPGuard{Fd: c.fd, Pid: c.pid, ReuseAddr: c.ie.GetOpts().GetReuseaddr()})
	}
	return out
}

// RepairTCP puts every established connection of the tree in repair mode
// and reads it. Call it with the network lock held on TCPConns; on error
// call EndTCP.
func (d *Dumper) RepairTCP() error {
	it := dumpHalf[*inetDump](d)
	// Every connection first, then the reading: a connection whose peer
	// is in the tree is then read with both ends still.
	for _, c := range it.conns {
		if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%s: TCP_REPAIR needs CAP_NET_ADMIN: %w", c.what, errs.ErrNotSupported)
			}
			return fmt.Errorf("%s: TCP_REPAIR: %w", c.what, err)
		}
		c.repair = true
	}
	for _, read := range []func(*tcpConn) error{(*tcpConn).readSend, (*tcpConn).readRecv, (*tcpConn).readSent} {
		for _, c := range it.conns {
			if err := read(c); err != nil {
				return fmt.Errorf("%s: %w", c.what, err)
			}
		}
	}
	// Out of repair mode again for the rest of the dump: the tree is
	// frozen and the lock drops every segment, so nothing a connection
	// holds can change, and a dump that dies from here on leaves
	// connections the program can use (in repair mode its reads fail with
	// EPERM, and only CAP_NET_ADMIN takes it off). SilenceTCP puts them
	// back in it just before the tree is killed.
	return d.EndTCP(false)
}

// SilenceTCP puts the tree's connections in repair mode again just before
// the tree is killed, once its image is complete: the last close of each,
// by the tree or by cryo, then sends nothing, and no socket lingers in
// FIN_WAIT1 with the 4-tuple the restore needs.
func (d *Dumper) SilenceTCP() error {
	var errl []error
	for _, c := range dumpHalf[*inetDump](d).conns {
		if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			errl = append(errl, fmt.Errorf("%s: TCP_REPAIR: %w", c.what, err))
			continue
		}
		c.repair = true
	}
	return errors.Join(errl...)
}

// EndTCP ends what RepairTCP began. A dump whose tree is killed (kill)
// leaves the connections in repair mode, so that their last close, once
// the tree and cryo have let go, sends nothing; otherwise repair goes off
// and each connection carries on as it was (TCP_REPAIR_OFF sends a window
// probe, which a peer answers with an ACK: nothing it has not seen).
func (d *Dumper) EndTCP(kill bool) error {
	if kill {
		return nil
	}
	var errl []error
	for _, c := range dumpHalf[*inetDump](d).conns {
		if !c.repair {
			continue
		}
		if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
			errl = append(errl, fmt.Errorf("%s: TCP_REPAIR off: %w", c.what, err))
			continue
		}
		c.repair = false
		// Repair mode took SO_REUSEADDR's place (sk_reuse); put the
		// program's back.
		if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, boolInt(c.ie.GetOpts().GetReuseaddr())); err != nil {
			errl = append(errl, fmt.Errorf("%s: SO_REUSEADDR: %w", c.what, err))
		}
	}
	return errors.Join(errl...)
}

// readSend reads, in repair mode, a connection's state and send queue:
// the first pass over the tree's connections. Every send queue is read
// before any receive queue: data that moves meanwhile from one end of a
// connection of the tree to the other (the kernel still sends and
// acknowledges in repair mode) is then in both images, which TCP takes as
// a retransmission, never in neither.
func (c *tcpConn) readSend() error {
	ti, err := kabi.GetTCPInfo(c.fd)
	if err != nil {
		return fmt.Errorf("TCP_INFO: %w", err)
	}
	if int(ti.State) != int(c.ie.GetState()) {
		return fmt.Errorf("its state became %s while the tree was frozen (is the network lock on?): %w", tcpStateName(int(ti.State)), errs.ErrNotSupported)
	}
	// Urgent data sits in the stream at a mark the queues do not keep.
	if mark, err := unix.IoctlGetInt(c.fd, unix.SIOCATMARK); err == nil && mark != 0 {
		return fmt.Errorf("urgent (out-of-band) data pending: %w", errs.ErrNotSupported)
	}
	if ti.Options&^(kabi.TCPI_OPT_TIMESTAMPS|kabi.TCPI_OPT_SACK|kabi.TCPI_OPT_WSCALE|kabi.TCPI_OPT_SYN_DATA) != 0 {
		return fmt.Errorf("TCP options %#x (ECN or microsecond timestamps), which TCP repair cannot set: %w", ti.Options, errs.ErrNotSupported)
	}
	mss, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("TCP_MAXSEG: %w", err)
	}
	st := &tcpstream.TcpStreamEntry{OptMask: proto.Uint32(uint32(ti.Options)), MssClamp: proto.Uint32(uint32(mss)), SndWscale: proto.Uint32(0)}
	if ti.Options&kabi.TCPI_OPT_WSCALE != 0 {
		// tcpi_snd_wscale and tcpi_rcv_wscale: two nibbles of one byte.
		st.SndWscale = proto.Uint32(uint32(ti.Wscale & 0xf))
		st.RcvWscale = proto.Uint32(uint32(ti.Wscale >> 4))
	}
	// Unsent first, so that it is never more than the queue; readSent
	// has the last word.
	unsq, err := unix.IoctlGetInt(c.fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	var seq uint32
	if c.outq, seq, err = readQueue(c.fd, kabi.TCP_SEND_QUEUE, unix.SIOCOUTQ); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	st.OutqLen, st.OutqSeq = proto.Uint32(uint32(len(c.outq))), proto.Uint32(seq)
	st.UnsqLen = proto.Uint32(min(uint32(unsq), uint32(len(c.outq))))
	st.Nodelay = c.ie.GetTcpOpts().Nodelay
	st.Cork = c.ie.GetTcpOpts().Cork
	c.st = st
	return nil
}

// readRecv reads, in repair mode, a connection's receive queue, window and
// timestamp clock: the second pass.
func (c *tcpConn) readRecv() error {
	st := c.st
	var seq uint32
	var err error
	if c.inq, seq, err = readQueue(c.fd, kabi.TCP_RECV_QUEUE, unix.SIOCINQ); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	st.InqLen, st.InqSeq = proto.Uint32(uint32(len(c.inq))), proto.Uint32(seq)
	w, err := kabi.GetTCPRepairWindow(c.fd)
	if err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	st.SndWl1, st.SndWnd, st.MaxWindow = proto.Uint32(w.SndWl1), proto.Uint32(w.SndWnd), proto.Uint32(w.MaxWindow)
	st.RcvWnd, st.RcvWup = proto.Uint32(w.RcvWnd), proto.Uint32(w.RcvWup)
	if st.GetOptMask()&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		ts, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
		st.Timestamp = proto.Uint32(uint32(ts))
	}
	return nil
}

// readSent reads again, last, how much of the send queue is unsent: what
// was sent since the first pass may have reached a receive queue read in
// the second, and must count as sent, or the peer's ACKs would
// acknowledge data this end thinks it never sent, which it discards with
// the segments that carry them.
func (c *tcpConn) readSent() error {
	unsq, err := unix.IoctlGetInt(c.fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	c.st.UnsqLen = proto.Uint32(min(c.st.GetUnsqLen(), uint32(unsq)))
	return nil
}

// readQueue reads queue q of a repair socket (its length by ioctl lenReq)
// and the sequence number that follows its end, again until two readings
// agree: without a network lock the queue may change while it is read.
// One byte more than the length is asked for, so that a queue that grew
// shows.
func readQueue(fd, q int, lenReq uint) ([]byte, uint32, error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return nil, 0, fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	// Back to no queue at once: with the send queue chosen, the kernel
	// would take what it sends meanwhile for sent without sending it.
	defer unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_NO_QUEUE)
	for try := 0; ; try++ {
		n, err := unix.IoctlGetInt(fd, lenReq)
		if err != nil {
			return nil, 0, fmt.Errorf("ioctl %#x: %w", lenReq, err)
		}
		seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, kabi.TCP_QUEUE_SEQ)
		if err != nil {
			return nil, 0, fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
		}
		var buf []byte
		got := 0
		if n > 0 {
			buf = make([]byte, n+1)
			if got, _, err = unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT); err != nil {
				return nil, 0, fmt.Errorf("recv MSG_PEEK: %w", err)
			}
		}
		n2, err := unix.IoctlGetInt(fd, lenReq)
		if err != nil {
			return nil, 0, fmt.Errorf("ioctl %#x: %w", lenReq, err)
		}
		seq2, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, kabi.TCP_QUEUE_SEQ)
		if err != nil {
			return nil, 0, fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
		}
		if got == n && n2 == n && seq2 == seq {
			return buf[:n:n], uint32(seq), nil
		}
		if try == 10 {
			return nil, 0, fmt.Errorf("%d bytes read, %d then %d queued: the queue keeps changing while read (is the network lock on?)", got, n, n2)
		}
	}
}

// writeSide writes tcp-stream-INO.img of every connection read, and the
// datagrams UDP sockets had not read (udp.go).
func (it *inetDump) writeSide(_ *Dumper, s *Side) error {
	if err := it.writeUDPQueues(s); err != nil {
		return err
	}
	for _, c := range it.conns {
		if c.st == nil {
			return fmt.Errorf("%s: not read in repair mode (RepairTCP)", c.what)
		}
		f := imageset.TCPStream(c.ie.GetIno())
		w, err := s.Dir.Create(f.Name, f.Magic)
		if err != nil {
			return err
		}
		err = w.Write(c.st)
		if err == nil {
			err = w.WriteRaw(c.inq)
		}
		if err == nil {
			err = w.WriteRaw(c.outq)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Restore.

// tcpStream is one connection of the image: tcp-stream-INO.img.
type tcpStream struct {
	st        *tcpstream.TcpStreamEntry
	inq, outq []byte
}

// maxTCPQueue bounds a queue as read back (a socket's buffers are at most
// a few tens of MiB).
const maxTCPQueue = 1 << 30

// loadTCPStream reads the connection of socket ino.
func loadTCPStream(dir *image.Dir, ino uint32) (*tcpStream, error) {
	f := imageset.TCPStream(ino)
	r, err := dir.Open(f.Name, f.Magic)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	st := &tcpstream.TcpStreamEntry{}
	if err := r.Next(st); err != nil {
		return nil, err
	}
	out := &tcpStream{st: st}
	for _, q := range []struct {
		n   uint32
		dst *[]byte
	}{{st.GetInqLen(), &out.inq}, {st.GetOutqLen(), &out.outq}} {
		if int64(q.n) > r.Remaining() || q.n > maxTCPQueue {
			return nil, &image.FormatError{File: f.Name, Offset: r.Offset(), Err: fmt.Errorf("a queue of %d bytes exceeds the file: %w", q.n, image.ErrImageCorrupt)}
		}
		sr, err := r.Raw(int64(q.n))
		if err != nil {
			return nil, err
		}
		*q.dst = make([]byte, q.n)
		if _, err := io.ReadFull(sr, *q.dst); err != nil {
			return nil, &image.FormatError{File: f.Name, Offset: r.Offset(), Err: err}
		}
	}
	if st.GetUnsqLen() > st.GetOutqLen() {
		return nil, &image.FormatError{File: f.Name, Offset: -1, Err: fmt.Errorf("%d unsent bytes of a send queue of %d: %w", st.GetUnsqLen(), st.GetOutqLen(), image.ErrImageCorrupt)}
	}
	return out, nil
}

// restoredConn is a connection made by the restore, in repair mode until
// the tree runs.
type restoredConn struct {
	cp     int // cryo's copy of the socket
	what   string
	e      *skinet.InetSkEntry
	s      *tcpStream
	unsent []byte
}

// TCPConns are the image's established connections, which the restore's
// network lock holds while they are made (nil when they come back closed).
func (r *Restorer) TCPConns() []TCPConn {
	if r.opts.TCPClose {
		return nil
	}
	var out []TCPConn
	for _, f := range r.set.Files {
		if e := f.GetIsk(); f.GetType() == fdinfo.FdTypes_INETSK && e != nil && isTCPConn(e) {
			out = append(out, TCPConn{Local: imageAddr(e.GetSrcAddr(), e.GetSrcPort()), Remote: imageAddr(e.GetDstAddr(), e.GetDstPort())})
		}
	}
	return out
}

func isTCPConn(e *skinet.InetSkEntry) bool {
	return e.GetProto() == unix.IPPROTO_TCP && e.GetType() == unix.SOCK_STREAM && connected(int(e.GetState()))
}

// repairBefore is what a connection needs before it is bound: repair mode.
func repairBefore(cp int, what string) error {
	if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%s: TCP_REPAIR needs CAP_NET_ADMIN: %w", what, errs.ErrNotSupported)
		}
		return fmt.Errorf("%s: TCP_REPAIR: %w", what, err)
	}
	return nil
}

// setQueueSeq sets where queue q starts, before connect.
func setQueueSeq(cp, q int, seq uint32) error {
	if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, kabi.TCP_QUEUE_SEQ, int(int32(seq))); err != nil {
		return fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
	}
	return nil
}

// repairSeqs gives both queues their start, between bind and connect.
func repairSeqs(cp int, s *tcpStream, state int) error {
	st := s.st
	rcvNxt, writeSeq := finSeqs(st, state)
	if err := setQueueSeq(cp, kabi.TCP_RECV_QUEUE, rcvNxt-st.GetInqLen()); err != nil {
		return err
	}
	return setQueueSeq(cp, kabi.TCP_SEND_QUEUE, writeSeq-st.GetOutqLen())
}

// finSeqs are where a connection's queues end without its FINs: a FIN
// takes a sequence number of its own, which the dumped rcv_nxt (a FIN
// received, CLOSE_WAIT) or write_seq (one sent, FIN_WAIT2) counts, and
// which the restore gives back by the FIN itself (restoreFINs).
func finSeqs(st *tcpstream.TcpStreamEntry, state int) (rcvNxt, writeSeq uint32) {
	rcvNxt, writeSeq = st.GetInqSeq(), st.GetOutqSeq()
	if finShutdown(state)&1 != 0 {
		rcvNxt--
	}
	if finShutdown(state)&2 != 0 {
		writeSeq--
	}
	return rcvNxt, writeSeq
}

// repairAfter puts back, once connected, the connection's options, queues
// and window, as libsoccr_restore does; the unsent part of the send queue
// waits for ResumeTCP.
func repairAfter(cp int, s *tcpStream, state int) error {
	st := s.st
	opts := []unix.TCPRepairOpt{}
	if st.GetOptMask()&kabi.TCPI_OPT_SACK != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: kabi.TCPOPT_SACK_PERM})
	}
	if st.GetOptMask()&kabi.TCPI_OPT_WSCALE != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: kabi.TCPOPT_WINDOW, Val: st.GetSndWscale() | st.GetRcvWscale()<<16})
	}
	if st.GetOptMask()&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: kabi.TCPOPT_TIMESTAMP})
	}
	opts = append(opts, unix.TCPRepairOpt{Code: kabi.TCPOPT_MAXSEG, Val: st.GetMssClamp()})
	if err := unix.SetsockoptTCPRepairOpt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if st.GetOptMask()&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(st.GetTimestamp()))); err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
	}
	// The queues go in as fewer, larger buffers than the program's
	// writes made, but not always into the room the dumped buffers had:
	// they get more while filled, and their sizes back in ResumeTCP.
	for _, b := range []struct {
		opt, plain int
		n          int
	}{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, len(s.outq)}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, len(s.inq)}} {
		if b.n == 0 {
			continue
		}
		cur, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, b.plain)
		if err != nil {
			return fmt.Errorf("getsockopt %d: %w", b.plain, err)
		}
		if err := setBufSize(cp, b.opt, b.plain, uint32(min(cur+4*b.n+1<<20, 1<<30))); err != nil {
			return err
		}
	}
	sent := len(s.outq) - int(st.GetUnsqLen())
	for _, q := range []struct {
		id   int
		data []byte
		name string
	}{{kabi.TCP_RECV_QUEUE, s.inq, "receive"}, {kabi.TCP_SEND_QUEUE, s.outq[:sent], "send"}} {
		if len(q.data) == 0 {
			continue
		}
		if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.id); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		if err := sendAll(cp, q.data); err != nil {
			return fmt.Errorf("%s queue (%d bytes): %w", q.name, len(q.data), err)
		}
	}
	if err := unix.SetsockoptInt(cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_NO_QUEUE); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	if st.RcvWnd != nil {
		w := kabi.TCPRepairWindow{SndWl1: st.GetSndWl1(), SndWnd: st.GetSndWnd(), MaxWindow: st.GetMaxWindow(), RcvWnd: st.GetRcvWnd(), RcvWup: st.GetRcvWup()}
		rcvNxt, _ := finSeqs(st, state)
		if rcvNxt != st.GetInqSeq() {
			// The FIN received is not in yet: the window still holds
			// its sequence number, as libsoccr_restore has it.
			w.RcvWup--
			w.RcvWnd++
		}
		// snd_wl1 is the sequence number of the segment that last moved
		// the peer's window; a peer that sent past a window since closed
		// (its data dropped: the buffer was full) leaves it beyond
		// rcv_nxt + rcv_wnd, which TCP_REPAIR_WINDOW refuses. It only
		// orders window updates: the end of the window serves as well.
		if end := rcvNxt + w.RcvWnd; int32(w.SndWl1-end) > 0 {
			w.SndWl1 = end
		}
		if err := kabi.SetTCPRepairWindow(cp, &w); err != nil {
			return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
		}
	}
	return nil
}

// sendAll sends b in chunks: a repair socket's receive queue takes each
// send as one linear buffer, which a large one cannot get (CRIU halves
// the chunk on failure the same way).
func sendAll(fd int, b []byte) error {
	chunk := len(b)
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b[:min(chunk, len(b))], nil, nil, unix.MSG_DONTWAIT)
		if err != nil || n <= 0 {
			if chunk > 1024 {
				chunk /= 2
				continue
			}
			if err == nil {
				err = io.ErrShortWrite
			}
			return err
		}
		b = b[n:]
	}
	return nil
}

// abortConn makes a connection come back aborted (--tcp-close): connected
// in repair mode, then disconnected there, which sends nothing and leaves
// ECONNABORTED for the program's next call, as a connection lost does.
func abortConn(p Proc, fd uint64) error {
	sa := make([]byte, 16) // AF_UNSPEC
	a, err := p.Arg(sa)
	if err != nil {
		return err
	}
	_, err = p.Call("connect AF_UNSPEC", unix.SYS_CONNECT, fd, a, uint64(len(sa)))
	return err
}

// ResumeTCP ends repair on the connections the restore made, right before
// the tree runs: TCP_REPAIR_OFF sends a window probe, which tells the
// peer the connection is there again; the unsent part of each send queue
// is then sent, as the program had written it; SO_REUSEADDR, which repair
// mode replaces, and the buffers' locks are put back as they were.
func (r *Restorer) ResumeTCP() error {
	u := restoreHalf[*inetOpen](r)
	// Every connection exists now, still in repair mode: the FINs go in,
	// and whatever they make a connection send reaches a socket of the
	// tree that is there to take it.
	for _, c := range u.conns {
		if err := restoreFINs(c); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
	}
	for _, c := range u.conns {
		// The receive buffer first, so that the window the probe offers
		// is the one the dumped buffer gave.
		o := c.e.GetOpts()
		if err := setBufSize(c.cp, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.GetSoRcvbuf()); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if err := unix.SetsockoptInt(c.cp, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
			return fmt.Errorf("%s: TCP_REPAIR off: %w", c.what, err)
		}
		if len(c.unsent) > 0 {
			if err := sendAll(c.cp, c.unsent); err != nil {
				return fmt.Errorf("%s: the unsent part of the send queue (%d bytes): %w", c.what, len(c.unsent), err)
			}
		}
		if err := setBufSize(c.cp, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.GetSoSndbuf()); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if err := setIfDiffers(c.cp, sockOpt{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"}, boolInt(c.e.GetOpts().GetReuseaddr())); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if err := setIfDiffers(c.cp, sockOpt{unix.SOL_SOCKET, unix.SO_BUF_LOCK, "SO_BUF_LOCK"}, int(c.e.GetOpts().GetSoBufLock())); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		unix.Close(c.cp)
		c.cp = -1
	}
	u.conns = nil
	return nil
}

// closeConns closes cryo's copies of the connections made (a failed
// restore: the processes are killed, and the repair sockets go silently).
func (u *inetOpen) closeConns() {
	for _, c := range u.conns {
		if c.cp >= 0 {
			unix.Close(c.cp)
		}
	}
	u.conns = nil
}

// connAddrs are a connection's addresses for an error message.
func connAddrs(e *skinet.InetSkEntry) (netip.AddrPort, netip.AddrPort) {
	return imageAddr(e.GetSrcAddr(), e.GetSrcPort()), imageAddr(e.GetDstAddr(), e.GetDstPort())
}

// shutdownName names sock_diag's shutdown bits.
func shutdownName(how uint8) string {
	switch how & 3 {
	case 1:
		return "reading"
	case 2:
		return "writing"
	}
	return "reading and writing"
}

// connected says whether a TCP socket in state is a connection TCP repair
// brings back: ESTABLISHED, or half-closed with every FIN acknowledged,
// FIN_WAIT2 (it sent its FIN) and CLOSE_WAIT (it received one).
func connected(state int) bool {
	return state == kabi.TCP_ESTABLISHED || state == kabi.TCP_FIN_WAIT2 || state == kabi.TCP_CLOSE_WAIT
}

// finShutdown are the shutdown bits a connection in state has from its
// FINs alone: SEND_SHUTDOWN once it sent one, RCV_SHUTDOWN once it got one.
func finShutdown(state int) uint8 {
	switch state {
	case kabi.TCP_FIN_WAIT2:
		return 2
	case kabi.TCP_CLOSE_WAIT:
		return 1
	}
	return 0
}

// restoreFINs gives a half-closed connection its FINs, as libsoccr does,
// the connection being ESTABLISHED and in repair mode: its own FIN by
// shutdown(SHUT_WR) with the send queue chosen (the FIN then counts as
// sent, nothing goes out), and what its peer sent by packets made to come
// from the peer: for FIN_WAIT2 the peer's acknowledgement of that FIN, for
// CLOSE_WAIT the peer's FIN. The kernel takes them as the peer's; the
// connection is then in its dumped state, which is checked.
func restoreFINs(c *restoredConn) error {
	state := int(c.e.GetState())
	if state == kabi.TCP_ESTABLISHED {
		return nil
	}
	st := c.s.st
	rcvNxt, writeSeq := finSeqs(st, state)
	local, remote := connAddrs(c.e)
	win := st.GetSndWnd() >> st.GetSndWscale()
	switch state {
	case kabi.TCP_FIN_WAIT2:
		if err := unix.SetsockoptInt(c.cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_SEND_QUEUE); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		if err := unix.Shutdown(c.cp, unix.SHUT_WR); err != nil {
			return fmt.Errorf("shutdown for its FIN: %w", err)
		}
		if err := unix.SetsockoptInt(c.cp, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_NO_QUEUE); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		if err := sendAs(remote, local, rcvNxt, writeSeq+1, tcpACK, win); err != nil {
			return fmt.Errorf("the peer's ACK of its FIN: %w", err)
		}
	case kabi.TCP_CLOSE_WAIT:
		if err := sendAs(remote, local, rcvNxt, writeSeq-st.GetOutqLen(), tcpACK|tcpFIN, win); err != nil {
			return fmt.Errorf("the peer's FIN: %w", err)
		}
	}
	// The packets are taken in softirq, right away on loopback; a moment
	// for another device.
	var got uint8
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		ti, err := kabi.GetTCPInfo(c.cp)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		if got = ti.State; int(got) == state {
			return nil
		}
	}
	return fmt.Errorf("its FINs given back, it is in state %s, not %s (a network lock that drops the packets cryo makes?)", tcpStateName(int(got)), tcpStateName(state))
}

// TCP header flags.
const (
	tcpFIN = 0x01
	tcpACK = 0x10
)

// finMark marks the packets restoreFINs makes (CRIU's SOCCR_MARK), so
// that a network lock can let them through.
const finMark = 0xC114

// sendAs sends a TCP segment without data from src to dst through a raw
// socket, with its own IP header: src is the connection's peer, dst the
// restored socket. A v4-mapped pair goes as IPv4.
func sendAs(src, dst netip.AddrPort, seq, ack uint32, flags uint8, win uint32) error {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], uint16(min(win, 0xffff)))
	var pseudo []byte
	pseudo = append(pseudo, sa.AsSlice()...)
	pseudo = append(pseudo, da.AsSlice()...)
	if sa.Is4() {
		pseudo = append(pseudo, 0, unix.IPPROTO_TCP, 0, byte(len(tcp)))
	} else {
		pseudo = append(pseudo, 0, 0, 0, byte(len(tcp)), 0, 0, 0, unix.IPPROTO_TCP)
	}
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
	var (
		pkt    []byte
		family int
		to     unix.Sockaddr
	)
	if sa.Is4() {
		family = unix.AF_INET
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_TCP
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		s4, d4 := sa.As4(), da.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
		pkt, to = append(ip, tcp...), &unix.SockaddrInet4{Addr: d4}
	} else {
		family = unix.AF_INET6
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, unix.IPPROTO_TCP, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		s6, d6 := sa.As16(), da.As16()
		copy(ip[8:], s6[:])
		copy(ip[24:], d6[:])
		pkt, to = append(ip, tcp...), &unix.SockaddrInet6{Addr: d6}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, finMark); err != nil {
		return fmt.Errorf("SO_MARK: %w", err)
	}
	// A peer's address is not one of this machine's, as a rule.
	if family == unix.AF_INET {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
	}
	if err != nil {
		return fmt.Errorf("IP_TRANSPARENT: %w", err)
	}
	return unix.Sendto(fd, pkt, 0, to)
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// TCPHolders lists the processes of the tree that have an established
// connection open: those whose threads could use one while it is in
// repair mode.
func (d *Dumper) TCPHolders() []int {
	seen := map[int]bool{}
	var out []int
	for _, c := range dumpHalf[*inetDump](d).conns {
		var st unix.Stat_t
		if err := unix.Fstat(c.fd, &st); err != nil {
			continue
		}
		for _, o := range d.opened[fileIno{st.Dev, st.Ino}] {
			if !seen[o.pid] {
				seen[o.pid] = true
				out = append(out, o.pid)
			}
		}
	}
	return out
}

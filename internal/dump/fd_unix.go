package dump

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	skpacket "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	skunix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/sockdiag"
)

// UNIX domain sockets. Each socket is one open file description (sockets
// cannot be reopened), so its file id stands for the socket. What a socket
// is connected to comes from sock_diag (one dump of every unix socket per
// cryo dump); its options and unread data from a copy of the fd taken with
// pidfd_getfd.
//
// What restore can rebuild, and so what is dumped, is checked once every
// process is collected (checkUnix): peers, listeners and the connections
// waiting in their backlogs must all be in the tree.
//
// The unread data of a socket is its receive queue, read with MSG_PEEK at
// a moving SO_PEEK_OFF (one message per recvmsg for datagram and seqpacket
// sockets, so boundaries are kept) and written to sk-queues.img as CRIU
// does: an SkPacketEntry for the socket's file id, then the bytes.
//
// A connection waiting in a listener's backlog is an "embryo" socket that
// no fd reaches; the data its client sent sits in the embryo's queue, and
// no kernel interface reads it without accept(), which would change the
// program's state. Such connections are dumped only while they carry no
// data (CRIU refuses them the same way). In the image, a waiting client
// socket names the listener as its peer (as CRIU writes it) and its place
// in the backlog, from 1, in its backlog field, which CRIU leaves
// meaningless for sockets that do not listen: restore reconnects the
// clients in that order.

// unixTable is the tree's unix sockets.
type unixTable struct {
	diag  map[uint32]*sockdiag.Unix // every unix socket of the namespace
	socks map[uint32]*unixSock      // those the tree holds, by inode
	order []*unixSock
}

// unixSock is one dumped unix socket.
type unixSock struct {
	d       *sockdiag.Unix
	pid, fd int // where it was first seen
	link    string
	entry   *skunix.UnixSkEntry
	// msgs is the unread data: one entry per message for datagram and
	// seqpacket sockets, one run of bytes for a stream.
	msgs [][]byte
}

func isSocket(_ string, st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFSOCK }

func (ft *fileTable) unixSockets() (*unixTable, error) {
	if ft.unix == nil {
		// cryo's own network namespace: the tree must share it (the
		// sockets of another are not listed, and their fds fail the
		// dump as not found).
		diag, err := sockdiag.UnixSockets(nil)
		if err != nil {
			return nil, err
		}
		ft.unix = &unixTable{diag: diag, socks: map[uint32]*unixSock{}}
	}
	return ft.unix, nil
}

var sockTypes = map[int]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket", unix.SOCK_RAW: "raw", unix.SOCK_RDM: "rdm", unix.SOCK_PACKET: "packet"}

var sockFamilies = map[int]string{unix.AF_INET: "inet", unix.AF_INET6: "inet6", unix.AF_NETLINK: "netlink", unix.AF_PACKET: "packet", unix.AF_VSOCK: "vsock", unix.AF_ALG: "alg", unix.AF_BLUETOOTH: "bluetooth", unix.AF_XDP: "xdp"}

func sockKind(family, typ int) string {
	f, ok := sockFamilies[family]
	if !ok {
		f = "family " + strconv.Itoa(family)
	}
	t, ok := sockTypes[typ]
	if !ok {
		t = "type " + strconv.Itoa(typ)
	}
	return f + " " + t
}

// dumpSocket dumps a unix socket and refuses every other family, naming it.
func dumpSocket(e *fdEnv) (uint32, error) {
	fd, err := takeFd(e.p.pid, e.fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, fmt.Errorf("SO_TYPE: %w", err)
	}
	if family != unix.AF_UNIX {
		return 0, fmt.Errorf("%s socket: %w", sockKind(family, typ), ErrNotSupported)
	}
	what := "unix " + sockTypes[typ]
	if typ != unix.SOCK_STREAM && typ != unix.SOCK_DGRAM && typ != unix.SOCK_SEQPACKET {
		return 0, fmt.Errorf("%s socket: %w", sockKind(family, typ), ErrNotSupported)
	}
	ut, err := e.p.files.unixSockets()
	if err != nil {
		return 0, err
	}
	ino := uint32(e.st.Ino)
	d := ut.diag[ino]
	if d == nil {
		return 0, fmt.Errorf("%s: not among the sockets sock_diag lists (another network namespace?): %w", what, ErrNotSupported)
	}
	if _, seen := ut.socks[ino]; seen {
		return 0, fmt.Errorf("%s: a second open file description of one socket", what)
	}
	switch d.State {
	case kabi.TCP_LISTEN, kabi.TCP_ESTABLISHED, kabi.TCP_CLOSE:
	default:
		return 0, fmt.Errorf("%s in state %d: %w", what, d.State, ErrNotSupported)
	}
	opts, err := sockOpts(fd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	ue := &skunix.UnixSkEntry{
		Ino: proto.Uint32(ino), Type: proto.Uint32(uint32(typ)), State: proto.Uint32(uint32(d.State)),
		Flags: proto.Uint32(e.flags), Uflags: proto.Uint32(0), Backlog: proto.Uint32(0),
		Peer: proto.Uint32(d.Peer), Fown: noOwner(), Opts: opts, Name: d.Name,
		Shutdown: skopts.SkShutdown(d.Shutdown & 3).Enum(),
	}
	if ue.Name == nil {
		ue.Name = []byte{}
	}
	if d.State == kabi.TCP_LISTEN {
		ue.Backlog = proto.Uint32(d.WQLen) // a listener's max backlog
	}
	if len(d.Name) > 0 && d.Name[0] != 0 {
		perms, err := socketFile(e.p.pid, d, what)
		if err != nil {
			return 0, err
		}
		ue.FilePerms = perms
	}
	s := &unixSock{d: d, pid: e.p.pid, fd: e.fd, link: e.link, entry: ue}
	// Only a connected stream or seqpacket socket has a queue (recvmsg on
	// another fails); a datagram socket always may.
	if d.State == kabi.TCP_ESTABLISHED || typ == unix.SOCK_DGRAM {
		if s.msgs, err = peekQueue(fd, typ); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	id := e.p.files.add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Usk: ue})
	ut.socks[ino] = s
	ut.order = append(ut.order, s)
	return id, nil
}

// takeFd copies fd of pid into cryo: the copy shares the open file
// description, so the socket is the process's very own.
func takeFd(pid, fd int) (int, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	cp, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return cp, nil
}

// socketFile checks that the path a socket is bound to still leads to its
// socket file, and returns the file's permissions. The path is looked up
// under the process's root, as the kernel resolved it at bind time.
func socketFile(pid int, d *sockdiag.Unix, what string) (*skunix.FilePermsEntry, error) {
	name := strings.TrimRight(string(d.Name), "\x00") // a path name ends with its NUL
	if !strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%s bound to the relative path %q: %w", what, name, ErrNotSupported)
	}
	var st unix.Stat_t
	err := unix.Lstat("/proc/"+strconv.Itoa(pid)+"/root"+name, &st)
	if err == nil && (!d.HasVFS || uint32(st.Ino) != d.VFSIno || st.Mode&unix.S_IFMT != unix.S_IFSOCK) {
		err = errors.New("the path now leads to another file")
	}
	if err != nil {
		return nil, fmt.Errorf("%s bound to %s, whose socket file was removed (%w): %w", what, name, err, ErrNotSupported)
	}
	return &skunix.FilePermsEntry{Mode: proto.Uint32(st.Mode), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid)}, nil
}

func sockOpts(fd int) (*skopts.SkOptsEntry, error) {
	o := &skopts.SkOptsEntry{}
	for _, v := range []struct {
		opt int
		dst **uint32
	}{{unix.SO_SNDBUF, &o.SoSndbuf}, {unix.SO_RCVBUF, &o.SoRcvbuf}} {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, v.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %d: %w", v.opt, err)
		}
		*v.dst = proto.Uint32(uint32(n))
	}
	for _, v := range []struct {
		opt      int
		sec, usc **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, v.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %d: %w", v.opt, err)
		}
		*v.sec, *v.usc = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	for _, v := range []struct {
		opt int
		dst **bool
	}{{unix.SO_PASSCRED, &o.SoPasscred}, {unix.SO_PASSSEC, &o.SoPasssec}} {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, v.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %d: %w", v.opt, err)
		}
		*v.dst = proto.Bool(n != 0)
	}
	return o, nil
}

// maxQueued bounds the messages read from one socket: a unix socket holds
// at most a few hundred (net.unix.max_dgram_qlen, the receive buffer).
const maxQueued = 1 << 20

// peekQueue reads the receive queue of a socket without consuming it:
// MSG_PEEK from a peek offset that the kernel moves past what each call
// returned. A datagram or seqpacket recvmsg returns at most one message,
// so each call is one message, provided the buffer holds it whole
// (MSG_TRUNC gives its size; if it did not fit, the offset is set back to
// its start and it is read again). The offset is put back to -1 (off),
// as the program had it.
func peekQueue(fd, typ int) ([][]byte, error) {
	off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if off != -1 {
		return nil, fmt.Errorf("the program peeks with SO_PEEK_OFF (at %d): %w", off, ErrNotSupported)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
	stream := typ == unix.SOCK_STREAM
	flags := unix.MSG_PEEK | unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC
	if !stream {
		flags |= unix.MSG_TRUNC // the whole message's length; a stream would discard with it
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, 4096)
	var msgs [][]byte
	var run []byte
	pos := 0
	for len(msgs) < maxQueued {
		n, oobn, mflags, _, err := unix.Recvmsg(fd, buf, oob, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("peek at the queue: %w", err)
		}
		if err := checkControl(oob[:oobn], mflags); err != nil {
			return nil, fmt.Errorf("message %d in the queue: %w", len(msgs)+1, err)
		}
		if n == 0 {
			if stream {
				break // end of file: the peer shut down writing
			}
			// A zero-length datagram would not move the offset; an
			// empty seqpacket read is also how end of file looks.
			return nil, fmt.Errorf("an empty message in the queue: %w", ErrNotSupported)
		}
		if stream {
			run = append(run, buf[:n]...)
			pos += n
			continue
		}
		if n > len(buf) {
			buf = make([]byte, n)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, pos); err != nil {
				return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
			}
			continue
		}
		msgs = append(msgs, append([]byte(nil), buf[:n]...))
		pos += n
	}
	if len(run) > 0 {
		msgs = append(msgs, run)
	}
	return msgs, nil
}

// checkControl refuses messages that carry file descriptors. Peeking at
// them installed copies in cryo: those are closed at once.
func checkControl(oob []byte, mflags int) error {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("control data: %w", err)
	}
	for _, cm := range cms {
		if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_RIGHTS {
			fds, _ := unix.ParseUnixRights(&cm)
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("%d fd(s) in flight (SCM_RIGHTS not yet received): %w", len(fds), ErrNotSupported)
		}
	}
	if mflags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("control data that does not fit %d bytes (fds in flight?): %w", len(oob), ErrNotSupported)
	}
	return nil
}

// refuse is the error for socket s: it names the process, the fd and the
// socket, as the generic fd errors do.
func (s *unixSock) refuse(why string) error {
	return fmt.Errorf("fd %d (%s, unix %s, %s) of pid %d: %w", s.fd, s.link, sockTypes[int(s.entry.GetType())], why, s.pid, ErrNotSupported)
}

// checkUnix refuses, once the whole tree is collected, the sockets restore
// could not rebuild: a peer, listener or waiting connection outside the
// tree, data that cannot be put back. It also points each client waiting
// in a listener's backlog at the listener (see the top of this file).
func (ft *fileTable) checkUnix() error {
	ut := ft.unix
	if ut == nil {
		return nil
	}
	waiting := map[uint32]*unixSock{} // client inode → listener
	for _, s := range ut.order {
		if s.d.State != kabi.TCP_LISTEN {
			continue
		}
		for i, c := range s.d.Icons {
			cs := ut.socks[c]
			switch {
			case c == 0:
				return s.refuse("a connection in its backlog whose client socket is closed")
			case cs == nil:
				return s.refuse(fmt.Sprintf("a connection in its backlog from socket:[%d], outside the tree", c))
			case cs.d.WQLen != 0:
				// wqlen is the memory its sent data holds: not 0 means data.
				return cs.refuse(fmt.Sprintf("waits in the backlog of socket:[%d] with data sent, which cannot be read without accept()", s.d.Inode))
			}
			waiting[c] = s
			cs.entry.Peer = proto.Uint32(s.d.Inode)
			cs.entry.Backlog = proto.Uint32(uint32(i + 1))
		}
	}
	for _, s := range ut.order {
		if err := ut.check(s, waiting); err != nil {
			return err
		}
	}
	return nil
}

func (ut *unixTable) check(s *unixSock, waiting map[uint32]*unixSock) error {
	d := s.d
	queued := len(s.msgs) > 0
	if d.State == kabi.TCP_LISTEN {
		if len(d.Name) == 0 {
			return s.refuse("listening without a name")
		}
		return nil
	}
	if d.Peer == 0 {
		switch {
		case waiting[d.Inode] != nil:
			return nil
		case d.State == kabi.TCP_ESTABLISHED:
			if l := ut.backlogOf(d.Inode); l != 0 {
				return s.refuse(fmt.Sprintf("waits in the backlog of socket:[%d], outside the tree", l))
			}
			return s.refuse("its peer is closed")
		case queued:
			return s.refuse("datagrams queued on an unconnected socket, whose senders are not recorded")
		}
		return nil
	}
	p := ut.socks[d.Peer]
	if p == nil {
		return s.refuse("peer outside the tree")
	}
	if p.d.Peer != d.Inode {
		// Connected to a named socket that is not connected back: a
		// datagram client of a bound server.
		if d.Type != unix.SOCK_DGRAM || len(p.d.Name) == 0 {
			return s.refuse(fmt.Sprintf("connected to socket:[%d], which cannot be reached again", d.Peer))
		}
		if queued {
			return s.refuse("datagrams queued from senders that are not recorded")
		}
		return nil
	}
	if d.Type == unix.SOCK_DGRAM && len(d.Name) > 0 && queued {
		return s.refuse("datagrams queued on a bound socket, whose senders are not recorded")
	}
	if d.Type != unix.SOCK_DGRAM {
		// A named end of a connection is the accepted end: its name is
		// its listener's, which must be in the tree to accept it again.
		for _, e := range []*unixSock{s, p} {
			if len(e.d.Name) > 0 && e.d.Peer != 0 && ut.listener(e) == nil {
				return e.refuse(fmt.Sprintf("an accepted connection whose listening socket %s is not in the tree", printableName(e.d.Name)))
			}
		}
	}
	return nil
}

// backlogOf returns the inode of the listener, in or out of the tree, in
// whose backlog client socket ino waits, or 0.
func (ut *unixTable) backlogOf(ino uint32) uint32 {
	for _, l := range ut.diag {
		for _, c := range l.Icons {
			if c == ino {
				return l.Inode
			}
		}
	}
	return 0
}

// listener returns the listening socket of the tree that accepted s.
func (ut *unixTable) listener(s *unixSock) *unixSock {
	for _, l := range ut.order {
		if l.d.State == kabi.TCP_LISTEN && l.d.Type == s.d.Type && string(l.d.Name) == string(s.d.Name) {
			return l
		}
	}
	return nil
}

func printableName(b []byte) string {
	if len(b) > 0 && b[0] == 0 {
		return strconv.Quote("@" + string(b[1:]))
	}
	return strings.TrimRight(string(b), "\x00")
}

// writeUnixQueues writes sk-queues.img: each socket's unread messages,
// each an SkPacketEntry for the socket's file id followed by its bytes.
func (ft *fileTable) writeUnixQueues(dir *image.Dir) error {
	if ft.unix == nil {
		return nil
	}
	var w *image.Writer
	for _, s := range ft.unix.order {
		for _, m := range s.msgs {
			if w == nil {
				var err error
				if w, err = dir.Create(imageset.SkQueues.Name, imageset.SkQueues.Magic); err != nil {
					return err
				}
			}
			if err := w.Write(&skpacket.SkPacketEntry{IdFor: proto.Uint32(s.entry.GetId()), Length: proto.Uint32(uint32(len(m)))}); err != nil {
				w.Close()
				return err
			}
			if err := w.WriteRaw(m); err != nil {
				w.Close()
				return err
			}
		}
	}
	if w == nil {
		return nil
	}
	return w.Close()
}

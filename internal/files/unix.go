package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	skpacket "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	skunix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
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

var unixKind = Kind{
	Name:    "unix socket",
	Type:    fdinfo.FdTypes_UNIXSK,
	Dump:    func() dumper { return &unixDump{socks: map[uint32]*unixSock{}} },
	Restore: func() opener { return &unixOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		u := f.GetUsk()
		return Description{Path: fmt.Sprintf("socket:[%d] %q", u.GetIno(), u.GetName())}
	},
}

// unixDump is the tree's unix sockets.
type unixDump struct {
	diag  map[uint32]*sockdiag.Unix // every unix socket of the namespace
	socks map[uint32]*unixSock      // those the tree holds, by inode
	order []*unixSock
	// keepOutside: DumpOptions.KeepOutside.
	keepOutside bool
}

// uskExtern is CRIU's USK_EXTERN: the socket's peer is outside the tree.
const uskExtern = 1

// outside lists the sockets connected to a peer outside the tree, which
// the dump's keeper is to hold.
func (ut *unixDump) outside() []*unixSock {
	var out []*unixSock
	for _, s := range ut.order {
		if s.entry.GetUflags()&uskExtern != 0 {
			out = append(out, s)
		}
	}
	return out
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
	// idsErr refuses a socket whose owner or peer credentials the
	// restore could not give it (unixIDs), unless it is kept.
	idsErr error
	// closed is what the socket still says of its peer, if that peer is
	// closed (unix_closed.go); errPending, that an error is pending on
	// it, which refuses it unless it is kept.
	closed     *closedPeer
	errPending bool
}

func (ut *unixDump) match(fd *Fd) bool {
	a, ok := fd.socket()
	return ok && a.family == unix.AF_UNIX
}

// dump dumps a unix socket of a type restore can make.
func (ut *unixDump) dump(dd *Dumper, e *Fd) (uint32, error) {
	a, _ := e.socket()
	typ := a.typ
	what := "unix " + sockTypes[typ]
	if typ != unix.SOCK_STREAM && typ != unix.SOCK_DGRAM && typ != unix.SOCK_SEQPACKET {
		return 0, fmt.Errorf("%s socket: %w", sockKind(a.family, typ), errs.ErrNotSupported)
	}
	fd, err := e.Copy()
	if err != nil {
		return 0, err
	}
	if ut.diag == nil {
		if ut.diag, err = sockdiag.UnixSockets(nil); err != nil {
			return 0, err
		}
	}
	ino := uint32(e.Stat.Ino)
	d := ut.diag[ino]
	if d == nil {
		return 0, fmt.Errorf("%s: not among the sockets sock_diag lists (another network namespace?): %w", what, errs.ErrNotSupported)
	}
	if _, seen := ut.socks[ino]; seen {
		return 0, fmt.Errorf("%s: a second open file description of one socket", what)
	}
	switch d.State {
	case kabi.TCP_LISTEN, kabi.TCP_ESTABLISHED, kabi.TCP_CLOSE:
	default:
		return 0, fmt.Errorf("%s in state %d: %w", what, d.State, errs.ErrNotSupported)
	}
	// Owner and peer credentials matter to a socket the restore makes:
	// not to one the keeper holds (checkOne).
	idsErr := unixIDs(e, fd, what)
	opts, err := sockOpts(fd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	ue := &skunix.UnixSkEntry{
		Ino: proto.Uint32(ino), Type: proto.Uint32(uint32(typ)), State: proto.Uint32(uint32(d.State)),
		Flags: proto.Uint32(e.Flags), Uflags: proto.Uint32(0), Backlog: proto.Uint32(0),
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
		perms, err := socketFile(e.Pid, d, what)
		if err != nil {
			return 0, err
		}
		ue.FilePerms = perms
	}
	s := &unixSock{d: d, pid: e.Pid, fd: e.Num, link: e.Link, entry: ue, idsErr: idsErr}
	if s.errPending, err = pendingError(fd); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if d.State == kabi.TCP_ESTABLISHED && d.Peer == 0 {
		if s.closed, err = readClosedPeer(fd); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	// Only a connected stream or seqpacket socket has a queue (recvmsg on
	// another fails); a datagram socket always may.
	// Not a socket with an error pending: a recvmsg, even MSG_PEEK, would
	// return the error and clear it (checkOne refuses it, or the keeper
	// holds it with its queue).
	if (d.State == kabi.TCP_ESTABLISHED || typ == unix.SOCK_DGRAM) && !s.errPending {
		if s.msgs, err = peekQueue(fd, typ, d.Shutdown&rcvShutdown != 0); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	id := dd.Add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Usk: ue})
	ut.socks[ino] = s
	ut.order = append(ut.order, s)
	return id, nil
}

// socketFile checks that the path a socket is bound to still leads to its
// socket file, and returns the file's permissions. The path is looked up
// under the process's root, as the kernel resolved it at bind time.
func socketFile(pid int, d *sockdiag.Unix, what string) (*skunix.FilePermsEntry, error) {
	name := strings.TrimRight(string(d.Name), "\x00") // a path name ends with its NUL
	if !strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%s bound to the relative path %q: %w", what, name, errs.ErrNotSupported)
	}
	var st unix.Stat_t
	err := unix.Lstat("/proc/"+strconv.Itoa(pid)+"/root"+name, &st)
	if err == nil && (!d.HasVFS || uint32(st.Ino) != d.VFSIno || st.Mode&unix.S_IFMT != unix.S_IFSOCK) {
		err = errors.New("the path now leads to another file")
	}
	if err != nil {
		return nil, fmt.Errorf("%s bound to %s, whose socket file was removed (%w): %w", what, name, err, errs.ErrNotSupported)
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
// as the program had it. shut says that the socket can receive no more
// (RCV_SHUTDOWN: its peer shut down writing or closed): an empty
// seqpacket read is then end of file.
func peekQueue(fd, typ int, shut bool) ([][]byte, error) {
	off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if off != -1 {
		return nil, fmt.Errorf("the program peeks with SO_PEEK_OFF (at %d): %w", off, errs.ErrNotSupported)
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
			// empty seqpacket read is also how end of file looks. Past
			// every byte of the queue (SIOCINQ counts a seqpacket
			// socket's whole queue) of a socket that receives no more,
			// it is the end: empty messages left there read as end of
			// file does, forever.
			if inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && shut && typ == unix.SOCK_SEQPACKET && inq == pos {
				break
			}
			return nil, fmt.Errorf("an empty message in the queue: %w", errs.ErrNotSupported)
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
			return fmt.Errorf("%d fd(s) in flight (SCM_RIGHTS not yet received): %w", len(fds), errs.ErrNotSupported)
		}
	}
	if mflags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("control data that does not fit %d bytes (fds in flight?): %w", len(oob), errs.ErrNotSupported)
	}
	return nil
}

// refuse is the error for socket s: it names the process, the fd and the
// socket, as the generic fd errors do.
func (s *unixSock) refuse(why string) error {
	return fmt.Errorf("fd %d (%s, unix %s, %s) of pid %d: %w", s.fd, s.link, sockTypes[int(s.entry.GetType())], why, s.pid, errs.ErrNotSupported)
}

// check refuses, once the whole tree is collected, the sockets restore
// could not rebuild: a peer, listener or waiting connection outside the
// tree, data that cannot be put back. It also points each client waiting
// in a listener's backlog at the listener (see the top of this file).
func (ut *unixDump) check(*Dumper) error {
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
		if err := ut.checkOne(s, waiting); err != nil {
			return err
		}
	}
	return nil
}

func (ut *unixDump) checkOne(s *unixSock, waiting map[uint32]*unixSock) error {
	d := s.d
	if d.Peer != 0 && ut.socks[d.Peer] == nil && ut.keepOutside && d.Type != unix.SOCK_DGRAM && d.State == kabi.TCP_ESTABLISHED {
		// Kept by the dump's keeper, for the restore to take back as it
		// is: the peer sees a program that pauses.
		s.entry.Uflags = proto.Uint32(s.entry.GetUflags() | uskExtern)
		return nil
	}
	if s.idsErr != nil {
		return s.idsErr
	}
	if s.errPending {
		return s.refuse("an error pending (SO_ERROR: its peer closed with data it had not read), which cryo does not restore")
	}
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
			return ut.checkClosed(s)
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
				return e.refuse(fmt.Sprintf("an accepted connection whose listening socket %s is not in the tree", printable(e.d.Name)))
			}
		}
	}
	return nil
}

// backlogOf returns the inode of the listener, in or out of the tree, in
// whose backlog client socket ino waits, or 0.
func (ut *unixDump) backlogOf(ino uint32) uint32 {
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
func (ut *unixDump) listener(s *unixSock) *unixSock {
	for _, l := range ut.order {
		if l.d.State == kabi.TCP_LISTEN && l.d.Type == s.d.Type && string(l.d.Name) == string(s.d.Name) {
			return l
		}
	}
	return nil
}

// writeSide writes sk-queues.img: each socket's unread messages,
// each an SkPacketEntry for the socket's file id followed by its bytes.
func (ut *unixDump) writeSide(_ *Dumper, side *Side) error {
	dir := side.Dir
	var w *image.Writer
	for _, s := range ut.order {
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

// Restore. A socket is made, with whatever it is connected to, by the first
// process that needs it, in that process, and parked there; every process
// that holds it, that one included, takes its own fd on it. Made together:
//
//   - a connected pair: socketpair(), then bind() of a named end;
//   - a listener: socket(), bind(), listen(); then, through it, each
//     connection it had accepted (connect() then accept()), and last the
//     clients that waited in its backlog, connect()ed in their order, so
//     that the program's accept() finds them as it would have;
//   - a datagram socket connected to a bound one: the bound one first.
//
// Options, file status flags, unread data and shutdown are set by cryo on
// a copy of the socket it takes from the process (pidfd_getfd; cryo is the
// tracer): the queue of a socket is refilled by sending from its peer, one
// send per message, so datagram and seqpacket boundaries come back.
//
// The clients re-connected to a listener are connected by the process that
// made the listener: SO_PEERCRED of the connection it accepts names that
// process (and the credentials it has at that point of the restore).

// unixOpen is the tree's unix sockets while they are restored.
type unixOpen struct {
	entries map[uint32]*skunix.UnixSkEntry // by socket inode
	order   []*skunix.UnixSkEntry          // by file id
	made    map[uint32]Owner               // socket inode → fd of the process that made it
	queues  map[uint32][][]byte            // unread messages, by file id
	r       *Restorer
	p       Proc // the process making sockets now
}

func (u *unixOpen) loadSide(r *Restorer) error {
	u.r = r
	u.entries, u.made = map[uint32]*skunix.UnixSkEntry{}, map[uint32]Owner{}
	for _, f := range r.set.Files {
		if e := f.GetUsk(); f.GetType() == fdinfo.FdTypes_UNIXSK && e != nil {
			u.entries[e.GetIno()] = e
			u.order = append(u.order, e)
		}
	}
	sort.Slice(u.order, func(i, j int) bool { return u.order[i].GetId() < u.order[j].GetId() })
	var err error
	u.queues, err = loadSkQueues(r.set.Dir)
	return err
}

func (u *unixOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	if fd, ok, err := r.openInherited(p, InheritKey(f)); ok {
		return fd, err
	}
	u.p = p
	return u.sock(f.GetUsk().GetIno())
}

// asProcess makes one call of the current process that gives a socket an
// owner or peer credentials (socket, socketpair, bind, listen, connect,
// accept)
// with the process's own euid and egid (asImageIDs).
func (u *unixOpen) asProcess(p Proc, what string, nr uintptr, args ...uint64) (ret uint64, err error) {
	back, err := asImageIDs(u.r, p)
	if err != nil {
		return 0, err
	}
	ret, err = p.Call(what, nr, args...)
	if berr := back(); berr != nil && err == nil {
		err = berr
	}
	return ret, err
}

// A UNIX socket's owner (its inode's uid and gid) and the peer
// credentials its other end reads (SO_PEERCRED: the euid and egid of
// whoever made the pair, listened or connected) are its maker's ids at
// that moment, which CRIU's image does not keep. Restore makes the
// sockets before it gives the process its credentials: it takes the
// process's euid and egid for the time (asImageIDs), and the dump refuses
// a socket whose owner or peer credentials are other ids (unixIDs).

// unixIDs refuses a socket of process e.Pid that restore could not give
// its owner and peer credentials: they must be the process's euid and
// egid (and its fsuid and fsgid, which owned the inode).
func unixIDs(e *Fd, fd int, what string) error {
	st, err := procfs.StatusPid(e.Pid)
	if err != nil {
		return err
	}
	euid, egid := st.Uid[1], st.Gid[1]
	if e.Stat.Uid != euid || e.Stat.Gid != egid || st.Uid[3] != euid || st.Gid[3] != egid {
		return fmt.Errorf("%s socket owned by uid %d gid %d, not the process's euid %d egid %d (made before it changed ids?): %w", what, e.Stat.Uid, e.Stat.Gid, euid, egid, errs.ErrNotSupported)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("%s socket: SO_PEERCRED: %w", what, err)
	}
	if cred.Pid != 0 && (cred.Uid != euid || cred.Gid != egid) {
		return fmt.Errorf("%s socket whose peer credentials (SO_PEERCRED) are uid %d gid %d, not the process's euid %d egid %d: %w", what, cred.Uid, cred.Gid, euid, egid, errs.ErrNotSupported)
	}
	return nil
}

// asImageIDs gives the thread of p that restore injects into the euid and
// egid (and with them fsuid and fsgid) p's image has, and returns what
// gives its own back. Nothing changes when they are the restorer's. A
// root restorer keeps its capabilities across the switch: its real and
// saved uid stay 0, so the kernel gives them back with euid 0.
func asImageIDs(r *Restorer, p Proc) (func() error, error) {
	none := func() error { return nil }
	var euid, egid uint32
	found := false
	for _, ip := range r.set.Procs {
		if int(ip.Pid()) == p.Pid() && len(ip.Cores) > 0 {
			if c := ip.Cores[0].GetThreadCore().GetCreds(); c != nil {
				euid, egid, found = c.GetEuid(), c.GetEgid(), true
			}
		}
	}
	ownU, ownG := uint32(os.Geteuid()), uint32(os.Getegid())
	if !found || (euid == ownU && egid == ownG) {
		return none, nil
	}
	const keep = ^uint64(0) // -1: leave that id
	if _, err := p.Call("setresgid (the process's egid, for its sockets)", unix.SYS_SETRESGID, keep, uint64(egid), keep); err != nil {
		return none, err
	}
	if _, err := p.Call("setresuid (the process's euid, for its sockets)", unix.SYS_SETRESUID, keep, uint64(euid), keep); err != nil {
		p.Call("setresgid back", unix.SYS_SETRESGID, keep, uint64(ownG), keep)
		return none, err
	}
	return func() error {
		if _, err := p.Call("setresuid back", unix.SYS_SETRESUID, keep, uint64(ownU), keep); err != nil {
			return err
		}
		_, err := p.Call("setresgid back", unix.SYS_SETRESGID, keep, uint64(ownG), keep)
		return err
	}, nil
}

// sock returns a new fd of the current process on socket ino, making it
// first if no process has.
func (u *unixOpen) sock(ino uint32) (uint64, error) {
	if _, ok := u.made[ino]; !ok {
		if err := u.makeUnix(ino); err != nil {
			return 0, fmt.Errorf("socket:[%d]: %w", ino, err)
		}
		if _, ok := u.made[ino]; !ok {
			return 0, fmt.Errorf("socket:[%d] was not re-created with its peer or listener: %w", ino, image.ErrImageCorrupt)
		}
	}
	o := u.made[ino]
	if o.Pid == u.p.Pid() {
		return u.p.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, o.Fd, unix.F_DUPFD_CLOEXEC, 0)
	}
	return u.r.Take(u.p, o)
}

func (u *unixOpen) entry(ino uint32) (*skunix.UnixSkEntry, error) {
	e := u.entries[ino]
	if e == nil {
		return nil, corrupt("no unix socket with inode %d", ino)
	}
	return e, nil
}

func (u *unixOpen) makeUnix(ino uint32) error {
	e, err := u.entry(ino)
	if err != nil {
		return err
	}
	switch e.GetType() {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return fmt.Errorf("socket type %d: %w", e.GetType(), errs.ErrNotSupported)
	}
	if e.GetState() == tcpListen {
		return u.makeListener(e)
	}
	if e.GetPeer() == 0 && e.GetState() == tcpEstablished {
		return u.makeClosed(e)
	}
	if e.GetPeer() == 0 {
		fd, err := u.newUnix(e)
		if err != nil {
			return err
		}
		return u.unixDone(e, fd, nil)
	}
	p, err := u.entry(e.GetPeer())
	if err != nil {
		return err
	}
	stream := e.GetType() != unix.SOCK_DGRAM
	switch {
	case stream && p.GetState() == tcpListen:
		return u.makeListener(p) // a client waiting in p's backlog
	case p.GetPeer() == e.GetIno():
		if stream {
			for _, x := range []*skunix.UnixSkEntry{e, p} {
				if l := u.listenerOf(x); l != nil {
					return u.makeListener(l) // an accepted connection
				}
			}
		}
		return u.makePair(e, p)
	}
	// A datagram socket connected to a bound one, which is not connected
	// back: make that one, then connect to its name.
	pfd, err := u.sock(p.GetIno())
	if err != nil {
		return err
	}
	u.p.Call("close", unix.SYS_CLOSE, pfd)
	fd, err := u.newUnix(e)
	if err != nil {
		return err
	}
	if err := u.connectUnix(fd, p.GetName()); err != nil {
		return err
	}
	return u.unixDone(e, fd, nil)
}

// listenerOf returns the listener that accepted connection e (whose name
// is the listener's), if it is in the image.
func (u *unixOpen) listenerOf(e *skunix.UnixSkEntry) *skunix.UnixSkEntry {
	if len(e.GetName()) == 0 {
		return nil
	}
	for _, l := range u.order {
		if l.GetState() == tcpListen && l.GetType() == e.GetType() && string(l.GetName()) == string(e.GetName()) {
			return l
		}
	}
	return nil
}

// makeListener makes listener l, the connections it had accepted, and the
// clients waiting in its backlog, in that order: accept() takes the oldest
// waiting connection, so the accepted ones must come through before the
// backlog fills.
func (u *unixOpen) makeListener(l *skunix.UnixSkEntry) error {
	if _, ok := u.made[l.GetIno()]; ok {
		return nil
	}
	lfd, err := u.newUnix(l)
	if err != nil {
		return err
	}
	if _, err := u.asProcess(u.p, "listen", unix.SYS_LISTEN, lfd, uint64(l.GetBacklog())); err != nil {
		return err
	}
	if err := u.unixDone(l, lfd, nil); err != nil {
		return err
	}
	var waiting []*skunix.UnixSkEntry
	for _, s := range u.order {
		if s.GetState() != tcpEstablished || s.GetType() != l.GetType() || s.GetPeer() == 0 {
			continue
		}
		if _, ok := u.made[s.GetIno()]; ok {
			continue
		}
		if s.GetPeer() == l.GetIno() {
			waiting = append(waiting, s)
			continue
		}
		p := u.entries[s.GetPeer()]
		if p == nil || p.GetPeer() != s.GetIno() || u.listenerOf(s) != l {
			continue
		}
		// s was accepted from l; p is its client.
		cfd, err := u.newUnix(p)
		if err != nil {
			return err
		}
		if err := u.connectUnix(cfd, l.GetName()); err != nil {
			return err
		}
		afd, err := u.asProcess(u.p, "accept4", unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		if afd, err = u.r.Park(u.p, afd); err != nil {
			return err
		}
		if err := u.unixDone(s, afd, &pairEnd{p, cfd}); err != nil {
			return err
		}
	}
	sort.SliceStable(waiting, func(i, j int) bool { return waiting[i].GetBacklog() < waiting[j].GetBacklog() })
	for _, s := range waiting {
		cfd, err := u.newUnix(s)
		if err != nil {
			return err
		}
		if err := u.connectUnix(cfd, l.GetName()); err != nil {
			return fmt.Errorf("socket:[%d] waiting in the backlog of socket:[%d]: %w", s.GetIno(), l.GetIno(), err)
		}
		if err := u.unixDone(s, cfd, nil); err != nil {
			return err
		}
	}
	return nil
}

// makePair makes two sockets connected to each other with socketpair().
func (u *unixOpen) makePair(a, b *skunix.UnixSkEntry) error {
	p := u.p
	sv, err := p.Arg(make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := u.asProcess(p, "socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(a.GetType())|unix.SOCK_CLOEXEC, 0, sv); err != nil {
		return err
	}
	out, err := p.Out(sv, 8)
	if err != nil {
		return err
	}
	var fds [2]uint64
	for i, e := range []*skunix.UnixSkEntry{a, b} {
		if fds[i], err = u.r.Park(u.p, uint64(binary.LittleEndian.Uint32(out[i*4:]))); err != nil {
			return err
		}
		if len(e.GetName()) > 0 {
			if err := u.bindUnix(fds[i], e); err != nil {
				return err
			}
		}
	}
	return u.unixDone(a, fds[0], &pairEnd{b, fds[1]})
}

type pairEnd struct {
	e  *skunix.UnixSkEntry
	fd uint64
}

// newUnix makes a socket of e's type, bound to e's name if it has one,
// parked in this process.
func (u *unixOpen) newUnix(e *skunix.UnixSkEntry) (uint64, error) {
	fd, err := u.asProcess(u.p, "socket", unix.SYS_SOCKET, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if fd, err = u.r.Park(u.p, fd); err != nil {
		return 0, err
	}
	if len(e.GetName()) > 0 {
		if err := u.bindUnix(fd, e); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

func sockaddrUnix(name []byte) ([]byte, error) {
	if len(name) == 0 || len(name) > 108 {
		return nil, fmt.Errorf("unix socket name of %d bytes: %w", len(name), image.ErrImageCorrupt)
	}
	b := make([]byte, 2+len(name))
	binary.LittleEndian.PutUint16(b, unix.AF_UNIX)
	copy(b[2:], name)
	return b, nil
}

// bindUnix binds fd to e's name. A path name's socket file is left behind
// by the dumped socket (nothing removes it when a socket closes), so it is
// in the way: it is removed, but only if it is a socket file that no
// socket is bound to any more, that is if connect() to it is refused (a
// datagram probe: a bound socket of any type answers otherwise, with
// success or EPROTOTYPE). Any other file at the path fails the restore.
func (u *unixOpen) bindUnix(fd uint64, e *skunix.UnixSkEntry) error {
	name := e.GetName()
	path := ""
	if name[0] != 0 {
		path = strings.TrimRight(string(name), "\x00")
		if err := freeSocketPath(path); err != nil {
			return err
		}
	}
	sa, err := sockaddrUnix(name)
	if err != nil {
		return err
	}
	p, err := u.p.Arg(sa)
	if err != nil {
		return err
	}
	if _, err := u.asProcess(u.p, "bind", unix.SYS_BIND, fd, p, uint64(len(sa))); err != nil {
		return fmt.Errorf("bind to %q: %w", printable(name), err)
	}
	if fp := e.GetFilePerms(); path != "" && fp != nil {
		if err := os.Chmod(path, os.FileMode(fp.GetMode()&0o777)|modeBits(fp.GetMode())); err != nil {
			return err
		}
		if err := os.Lchown(path, int(fp.GetUid()), int(fp.GetGid())); err != nil && !errors.Is(err, os.ErrPermission) {
			return err
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func printable(name []byte) string {
	if len(name) > 0 && name[0] == 0 {
		return "@" + string(name[1:])
	}
	return strings.TrimRight(string(name), "\x00")
}

func freeSocketPath(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket path %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("socket path %s is taken by a file that is not a socket", path)
	}
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: path})
	unix.Close(probe)
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("socket path %s is in use by a live socket (probe: %v)", path, err)
	}
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove the stale socket file %s: %w", path, err)
	}
	return nil
}

// connectUnix connects fd of this process to the socket bound to name.
func (u *unixOpen) connectUnix(fd uint64, name []byte) error {
	sa, err := sockaddrUnix(name)
	if err != nil {
		return err
	}
	p, err := u.p.Arg(sa)
	if err != nil {
		return err
	}
	if _, err := u.asProcess(u.p, "connect "+printable(name), unix.SYS_CONNECT, fd, p, uint64(len(sa))); err != nil {
		return err
	}
	return nil
}

// unixDone records that e (and the other end of its pair, if given) is
// made, and sets through cryo's copies what is not about connections:
// options, file flags, unread data, then shutdown (after the data, which
// a shut-down socket would not take).
func (u *unixOpen) unixDone(e *skunix.UnixSkEntry, fd uint64, other *pairEnd) error {
	ends := []pairEnd{{e, fd}}
	if other != nil {
		ends = append(ends, *other)
	}
	cps := make([]int, len(ends))
	defer func() {
		for _, c := range cps {
			if c > 0 {
				unix.Close(c)
			}
		}
	}()
	for i, x := range ends {
		u.made[x.e.GetIno()] = Owner{Pid: u.p.Pid(), Fd: x.fd}
		cp, err := kabi.GetFd(u.p.Pid(), int(x.fd))
		if err != nil {
			return err
		}
		cps[i] = cp
		if err := setUnixOpts(cp, x.e); err != nil {
			return fmt.Errorf("socket:[%d]: %w", x.e.GetIno(), err)
		}
	}
	if len(ends) == 2 {
		for i, x := range ends {
			if err := fillUnix(cps[1-i], x.e, u.queues[x.e.GetId()]); err != nil {
				return fmt.Errorf("refill socket:[%d]: %w", x.e.GetIno(), err)
			}
		}
	} else if len(u.queues[e.GetId()]) > 0 {
		return fmt.Errorf("socket:[%d] has queued data but no peer to send it from: %w", e.GetIno(), errs.ErrNotSupported)
	}
	for i, x := range ends {
		if how := x.e.GetShutdown(); how != 0 {
			if err := unix.Shutdown(cps[i], int(how)-1); err != nil && !errors.Is(err, unix.ENOTCONN) {
				return fmt.Errorf("socket:[%d]: shutdown: %w", x.e.GetIno(), err)
			}
		}
	}
	return nil
}

// setUnixOpts puts back the options and file status flags. The kernel
// doubles the buffer sizes it is given and reports the doubled value,
// which is what the image holds: half is set back. The FORCE variants go
// past net.core.[rw]mem_max, as the program may have (with CAP_NET_ADMIN).
func setUnixOpts(fd int, e *skunix.UnixSkEntry) error {
	o := e.GetOpts()
	for _, v := range []struct {
		force, plain int
		val          uint32
	}{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.GetSoSndbuf()}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.GetSoRcvbuf()}} {
		if v.val == 0 {
			continue
		}
		if err := setBufSize(fd, v.force, v.plain, v.val); err != nil {
			return err
		}
	}
	if err := setTimeouts(fd, o); err != nil {
		return err
	}
	for _, v := range []struct {
		opt int
		on  bool
	}{{unix.SO_PASSCRED, o.GetSoPasscred()}, {unix.SO_PASSSEC, o.GetSoPasssec()}} {
		if v.on {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, v.opt, 1); err != nil {
				return fmt.Errorf("setsockopt %d: %w", v.opt, err)
			}
		}
	}
	// O_ASYNC waits for processDone: set here, on cryo's copy, the
	// kernel would record cryo's fd number as the si_fd of every SIGIO.
	if fl := e.GetFlags() & unix.O_NONBLOCK; fl != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(fl)); err != nil {
			return fmt.Errorf("file flags %#x: %w", fl, err)
		}
	}
	return nil
}

// processDone gives O_ASYNC back, set by the process itself on the fd's
// own number: the kernel records the number F_SETFL was called on and
// reports it as si_fd in the signal (fown.go) a socket's readiness raises.
// The program may have set it on another fd of the same description since
// closed; no interface shows that number, and the lowest fd of the first
// process holding the socket stands for it.
func (u *unixOpen) processDone(_ *Restorer, p Proc, fds map[uint64]*fdinfo.FileEntry) error {
	nums := make([]uint64, 0, len(fds))
	for n := range fds {
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for _, n := range nums {
		e := fds[n].GetUsk()
		if e.GetFlags()&unix.O_ASYNC == 0 {
			continue
		}
		fl := uint64(e.GetFlags() & (unix.O_NONBLOCK | unix.O_ASYNC))
		if _, err := p.Call("fcntl(F_SETFL, O_ASYNC)", unix.SYS_FCNTL, n, unix.F_SETFL, fl); err != nil {
			return fmt.Errorf("fd %d (socket:[%d]): %w", n, e.GetIno(), err)
		}
	}
	return nil
}

// fillUnix sends msgs from the peer (from) to the socket e, one send per
// message. Without waiting: what the socket held before fits again, with
// the buffer sizes set back first.
func fillUnix(from int, e *skunix.UnixSkEntry, msgs [][]byte) error {
	for i, m := range msgs {
		for off := 0; off < len(m); {
			n, err := unix.SendmsgN(from, m[off:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("message %d of %d (%d bytes): %w", i+1, len(msgs), len(m), err)
			}
			if e.GetType() != unix.SOCK_STREAM && n != len(m) {
				return fmt.Errorf("message %d: sent %d of %d bytes", i+1, n, len(m))
			}
			off += n
		}
	}
	return nil
}

// treeDone closes the fds restore made sockets on; every process that
// holds a socket has its own fd on it by now.
func (u *unixOpen) treeDone(r *Restorer) error {
	for ino, o := range u.made {
		p := r.proc(o.Pid)
		if p == nil {
			continue
		}
		if _, err := p.Call("close", unix.SYS_CLOSE, o.Fd); err != nil {
			return fmt.Errorf("socket:[%d]: %w", ino, err)
		}
	}
	u.made = map[uint32]Owner{}
	return nil
}

// rcvShutdown is RCV_SHUTDOWN (include/net/sock.h) in sock_diag's
// shutdown bits: the socket receives no more.
const rcvShutdown = 1

// af_unix's states, as sock_diag and the image give them.
const (
	tcpEstablished = 1
	tcpListen      = 10
)

// maxQueueBytes bounds one message of sk-queues.img.
const maxQueueBytes = 1 << 30

// loadSkQueues reads sk-queues.img: the unread messages of each socket,
// by file id, in order.
func loadSkQueues(dir *image.Dir) (map[uint32][][]byte, error) {
	name := imageset.SkQueues.Name
	out := map[uint32][][]byte{}
	if !dir.Has(name) {
		return out, nil
	}
	rd, err := dir.Open(name, imageset.SkQueues.Magic)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for {
		e := &skpacket.SkPacketEntry{}
		off := rd.Offset()
		if err := rd.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(e.GetScm()) > 0 {
			return nil, &image.FormatError{File: name, Offset: off, Err: fmt.Errorf("a message with fds in flight: %w", errs.ErrNotSupported)}
		}
		n := int64(e.GetLength())
		if n > rd.Remaining() || n > maxQueueBytes {
			return nil, &image.FormatError{File: name, Offset: off, Err: fmt.Errorf("message of %d bytes exceeds the file: %w", n, image.ErrImageCorrupt)}
		}
		sr, err := rd.Raw(n)
		if err != nil {
			return nil, err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(sr, b); err != nil {
			return nil, &image.FormatError{File: name, Offset: off, Err: err}
		}
		out[e.GetIdFor()] = append(out[e.GetIdFor()], b)
	}
}

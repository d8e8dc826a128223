package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	skpacket "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	skunix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"

	"github.com/cryo-project/cryo/internal/image"
)

// UNIX domain sockets (see internal/dump/fd_unix.go for what the image
// holds). A socket is made, with whatever it is connected to, by the first
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

// unixState is the tree's unix sockets while they are restored.
type unixState struct {
	entries map[uint32]*skunix.UnixSkEntry // by socket inode
	order   []*skunix.UnixSkEntry          // by file id
	made    map[uint32]fdOwner             // socket inode → fd of the process that made it
}

func (u *unixState) init(l *loaded) {
	if u.entries != nil {
		return
	}
	u.entries, u.made = map[uint32]*skunix.UnixSkEntry{}, map[uint32]fdOwner{}
	for _, f := range l.files {
		if e := f.GetUsk(); f.GetType() == fdinfo.FdTypes_UNIXSK && e != nil {
			u.entries[e.GetIno()] = e
			u.order = append(u.order, e)
		}
	}
	sort.Slice(u.order, func(i, j int) bool { return u.order[i].GetId() < u.order[j].GetId() })
}

func openUnix(r *restorer, f *fdinfo.FileEntry) (uint64, error) {
	return r.unixSock(f.GetUsk().GetIno())
}

// unixSock returns a new fd of this process on socket ino, making it first
// if no process has.
func (r *restorer) unixSock(ino uint32) (uint64, error) {
	u := &r.t.unix
	u.init(r.t.l)
	if _, ok := u.made[ino]; !ok {
		if err := r.makeUnix(ino); err != nil {
			return 0, fmt.Errorf("socket:[%d]: %w", ino, err)
		}
		if _, ok := u.made[ino]; !ok {
			return 0, fmt.Errorf("socket:[%d] was not re-created with its peer or listener: %w", ino, image.ErrImageCorrupt)
		}
	}
	o := u.made[ino]
	if o.pid == r.c.pid {
		return r.c.call(r.c.leader, "fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, o.fd, unix.F_DUPFD_CLOEXEC, 0)
	}
	return r.takeFd(o)
}

func (u *unixState) entry(ino uint32) (*skunix.UnixSkEntry, error) {
	e := u.entries[ino]
	if e == nil {
		return nil, &image.FormatError{File: "files.img", Offset: -1, Err: fmt.Errorf("no unix socket with inode %d: %w", ino, image.ErrImageCorrupt)}
	}
	return e, nil
}

func (r *restorer) makeUnix(ino uint32) error {
	u := &r.t.unix
	e, err := u.entry(ino)
	if err != nil {
		return err
	}
	switch e.GetType() {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return fmt.Errorf("socket type %d: %w", e.GetType(), ErrNotSupported)
	}
	if e.GetState() == tcpListen {
		return r.makeListener(e)
	}
	if e.GetPeer() == 0 {
		fd, err := r.newUnix(e)
		if err != nil {
			return err
		}
		return r.unixDone(e, fd, nil)
	}
	p, err := u.entry(e.GetPeer())
	if err != nil {
		return err
	}
	stream := e.GetType() != unix.SOCK_DGRAM
	switch {
	case stream && p.GetState() == tcpListen:
		return r.makeListener(p) // a client waiting in p's backlog
	case p.GetPeer() == e.GetIno():
		if stream {
			for _, x := range []*skunix.UnixSkEntry{e, p} {
				if l := u.listenerOf(x); l != nil {
					return r.makeListener(l) // an accepted connection
				}
			}
		}
		return r.makePair(e, p)
	}
	// A datagram socket connected to a bound one, which is not connected
	// back: make that one, then connect to its name.
	pfd, err := r.unixSock(p.GetIno())
	if err != nil {
		return err
	}
	r.c.call(r.c.leader, "close", unix.SYS_CLOSE, pfd)
	fd, err := r.newUnix(e)
	if err != nil {
		return err
	}
	if err := r.connectUnix(fd, p.GetName()); err != nil {
		return err
	}
	return r.unixDone(e, fd, nil)
}

// listenerOf returns the listener that accepted connection e (whose name
// is the listener's), if it is in the image.
func (u *unixState) listenerOf(e *skunix.UnixSkEntry) *skunix.UnixSkEntry {
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
func (r *restorer) makeListener(l *skunix.UnixSkEntry) error {
	u := &r.t.unix
	if _, ok := u.made[l.GetIno()]; ok {
		return nil
	}
	lfd, err := r.newUnix(l)
	if err != nil {
		return err
	}
	if _, err := r.c.call(r.c.leader, "listen", unix.SYS_LISTEN, lfd, uint64(l.GetBacklog())); err != nil {
		return err
	}
	if err := r.unixDone(l, lfd, nil); err != nil {
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
		cfd, err := r.newUnix(p)
		if err != nil {
			return err
		}
		if err := r.connectUnix(cfd, l.GetName()); err != nil {
			return err
		}
		afd, err := r.c.call(r.c.leader, "accept4", unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		if afd, err = r.park(afd); err != nil {
			return err
		}
		if err := r.unixDone(s, afd, &pairEnd{p, cfd}); err != nil {
			return err
		}
	}
	sort.SliceStable(waiting, func(i, j int) bool { return waiting[i].GetBacklog() < waiting[j].GetBacklog() })
	for _, s := range waiting {
		cfd, err := r.newUnix(s)
		if err != nil {
			return err
		}
		if err := r.connectUnix(cfd, l.GetName()); err != nil {
			return fmt.Errorf("socket:[%d] waiting in the backlog of socket:[%d]: %w", s.GetIno(), l.GetIno(), err)
		}
		if err := r.unixDone(s, cfd, nil); err != nil {
			return err
		}
	}
	return nil
}

// makePair makes two sockets connected to each other with socketpair().
func (r *restorer) makePair(a, b *skunix.UnixSkEntry) error {
	c := r.c
	sv, err := c.arg(make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := c.leader.Call("socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(a.GetType())|unix.SOCK_CLOEXEC, 0, sv); err != nil {
		c.cursor = 0
		return err
	}
	out, err := c.out(sv, 8)
	c.cursor = 0
	if err != nil {
		return err
	}
	var fds [2]uint64
	for i, e := range []*skunix.UnixSkEntry{a, b} {
		if fds[i], err = r.park(uint64(binary.LittleEndian.Uint32(out[i*4:]))); err != nil {
			return err
		}
		if len(e.GetName()) > 0 {
			if err := r.bindUnix(fds[i], e); err != nil {
				return err
			}
		}
	}
	return r.unixDone(a, fds[0], &pairEnd{b, fds[1]})
}

type pairEnd struct {
	e  *skunix.UnixSkEntry
	fd uint64
}

// newUnix makes a socket of e's type, bound to e's name if it has one,
// parked in this process.
func (r *restorer) newUnix(e *skunix.UnixSkEntry) (uint64, error) {
	fd, err := r.c.call(r.c.leader, "socket", unix.SYS_SOCKET, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if fd, err = r.park(fd); err != nil {
		return 0, err
	}
	if len(e.GetName()) > 0 {
		if err := r.bindUnix(fd, e); err != nil {
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
func (r *restorer) bindUnix(fd uint64, e *skunix.UnixSkEntry) error {
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
	p, err := r.c.arg(sa)
	if err != nil {
		return err
	}
	if _, err := r.c.call(r.c.leader, "bind", unix.SYS_BIND, fd, p, uint64(len(sa))); err != nil {
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
func (r *restorer) connectUnix(fd uint64, name []byte) error {
	sa, err := sockaddrUnix(name)
	if err != nil {
		return err
	}
	p, err := r.c.arg(sa)
	if err != nil {
		return err
	}
	if _, err := r.c.call(r.c.leader, "connect "+printable(name), unix.SYS_CONNECT, fd, p, uint64(len(sa))); err != nil {
		return err
	}
	return nil
}

// unixDone records that e (and the other end of its pair, if given) is
// made, and sets through cryo's copies what is not about connections:
// options, file flags, unread data, then shutdown (after the data, which
// a shut-down socket would not take).
func (r *restorer) unixDone(e *skunix.UnixSkEntry, fd uint64, other *pairEnd) error {
	u := &r.t.unix
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
		u.made[x.e.GetIno()] = fdOwner{pid: r.c.pid, fd: x.fd}
		cp, err := takeOwnFd(r.c.pid, x.fd)
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
			if err := fillUnix(cps[1-i], x.e, r.t.l.skQueues[x.e.GetId()]); err != nil {
				return fmt.Errorf("refill socket:[%d]: %w", x.e.GetIno(), err)
			}
		}
	} else if len(r.t.l.skQueues[e.GetId()]) > 0 {
		return fmt.Errorf("socket:[%d] has queued data but no peer to send it from: %w", e.GetIno(), ErrNotSupported)
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

// takeOwnFd copies fd of the restored process pid into cryo.
func takeOwnFd(pid int, fd uint64) (int, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	cp, err := unix.PidfdGetfd(pfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return cp, nil
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
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, v.force, int(v.val/2))
		if errors.Is(err, unix.EPERM) {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, v.plain, int(v.val/2))
		}
		if err != nil {
			return fmt.Errorf("setsockopt %d: %w", v.plain, err)
		}
	}
	for _, v := range []struct {
		opt      int
		sec, usc uint64
	}{{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec()}, {unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec()}} {
		if v.sec == 0 && v.usc == 0 {
			continue
		}
		tv := unix.Timeval{Sec: int64(v.sec), Usec: int64(v.usc)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, v.opt, &tv); err != nil {
			return fmt.Errorf("setsockopt %d: %w", v.opt, err)
		}
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
	if fl := e.GetFlags() & (unix.O_NONBLOCK | unix.O_ASYNC); fl != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(fl)); err != nil {
			return fmt.Errorf("file flags %#x: %w", fl, err)
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

// closeUnix closes the fds restore made sockets on; every process that
// holds a socket has its own fd on it by now.
func (t *treeRestorer) closeUnix() error {
	for ino, o := range t.unix.made {
		r := t.byPid[uint32(o.pid)]
		if r == nil || r.c == nil {
			continue
		}
		if _, err := r.c.call(r.c.leader, "close", unix.SYS_CLOSE, o.fd); err != nil {
			return fmt.Errorf("socket:[%d]: %w", ino, err)
		}
	}
	t.unix.made = map[uint32]fdOwner{}
	return nil
}

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
	const name = "sk-queues.img"
	out := map[uint32][][]byte{}
	rd, err := dir.Open(name, "SK_QUEUES")
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
			return nil, &image.FormatError{File: name, Offset: off, Err: fmt.Errorf("a message with fds in flight: %w", ErrNotSupported)}
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

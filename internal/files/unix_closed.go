package files

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	skunix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// UNIX sockets whose peer is closed: one end of a connection or of a
// socketpair that the program keeps after the other end's last fd went
// (a JVM keeps such a stream socket from start-up). The kernel leaves the
// survivor connected (ESTABLISHED) to a dead socket that sock_diag shows
// as peer 0. What the program can still see of it:
//
//   - its receive queue: what the peer sent before it closed reads back,
//     then end of file (a stream or seqpacket socket: closing the peer
//     set SHUTDOWN_MASK on the survivor) or more waiting (a datagram one);
//   - writes failing: EPIPE on a stream or seqpacket socket; on a datagram
//     one ECONNREFUSED once, which also disconnects it, then ENOTCONN;
//   - the peer's address (getpeername), and the peer credentials of
//     whoever made the pair (SO_PEERCRED);
//   - a pending error (SO_ERROR, ECONNRESET) if the peer closed with data
//     it had not read: the image has no field for it, and reading it at
//     dump would clear it, so it is refused (pendingError, for every unix
//     socket).
//
// In the image such a socket is what sock_diag says: ESTABLISHED, peer 0,
// shut down both ways for a stream. Restore makes a socketpair, fills the
// survivor's queue from the other end, and closes that end, so that the
// kernel itself puts the survivor in the state the peer's close had left
// it. That reproduces a peer that had no address and the pair's creds
// being the maker's: a peer that was bound to a name, and an accepted
// connection (named after its listener) whose client closed, are refused.

// closedPeer is what a socket whose peer is closed still tells of it.
type closedPeer struct {
	name    []byte // the peer's address, as getpeername gives it (empty: unnamed)
	credPid int32  // SO_PEERCRED's pid: who made the pair, or connected
}

// readClosedPeer reads, through cryo's copy fd, what a socket whose peer
// is closed tells of it.
func readClosedPeer(fd int) (*closedPeer, error) {
	name, err := kabi.PeerNameRaw(fd)
	if err != nil {
		return nil, fmt.Errorf("getpeername: %w", err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return &closedPeer{name: name, credPid: cred.Pid}, nil
}

// pendingError says whether a socket has an error pending (POLLERR;
// af_unix sets only ECONNRESET): the program's next call would return it,
// and the image has no field for it, so checkOne refuses such a socket
// (unless the keeper holds it, the very socket). poll shows it without
// clearing it, as SO_ERROR would.
func pendingError(fd int) (bool, error) {
	p := []unix.PollFd{{Fd: int32(fd)}}
	for {
		_, err := unix.Poll(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		return p[0].Revents&unix.POLLERR != 0, nil
	}
}

// checkClosed refuses a socket whose peer is closed that restore could
// not make again the way it is.
func (ut *unixDump) checkClosed(s *unixSock) error {
	c := s.closed
	if c == nil {
		return s.refuse("its peer is closed, and what it says of that peer was not read")
	}
	if len(c.name) > 0 {
		return s.refuse(fmt.Sprintf("its peer, bound to %q, is closed: restore cannot make a closed peer with a name", printable(c.name)))
	}
	if len(s.d.Name) > 0 && s.d.Type != unix.SOCK_DGRAM {
		return s.refuse("an accepted connection whose client is closed: restore cannot accept it again")
	}
	if int(c.credPid) != s.pid {
		return s.refuse(fmt.Sprintf("its peer is closed, and its peer credentials name pid %d, not the process that holds it (%d), which restore makes it in", c.credPid, s.pid))
	}
	return nil
}

// makeClosed makes socket e, whose peer is closed: a socketpair, the
// queue filled from the other end, which is then closed.
func (u *unixOpen) makeClosed(e *skunix.UnixSkEntry) error {
	p := u.p
	sv, err := p.Arg(make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := u.asProcess(p, "socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0, sv); err != nil {
		return err
	}
	out, err := p.Out(sv, 8)
	if err != nil {
		return err
	}
	fd, peer := uint64(binary.LittleEndian.Uint32(out)), uint64(binary.LittleEndian.Uint32(out[4:]))
	closePeer := func() error {
		_, err := p.Call("close (the peer to be closed)", unix.SYS_CLOSE, peer)
		return err
	}
	if fd, err = u.r.Park(p, fd); err != nil {
		closePeer()
		return err
	}
	u.made[e.GetIno()] = Owner{Pid: p.Pid(), Fd: fd}
	if len(e.GetName()) > 0 {
		if err := u.bindUnix(fd, e); err != nil {
			closePeer()
			return err
		}
	}
	cp, err := kabi.GetFd(p.Pid(), int(fd))
	if err != nil {
		closePeer()
		return err
	}
	defer unix.Close(cp)
	pcp, err := kabi.GetFd(p.Pid(), int(peer))
	if err != nil {
		closePeer()
		return err
	}
	if err := setUnixOpts(cp, e); err != nil {
		unix.Close(pcp)
		closePeer()
		return fmt.Errorf("socket:[%d]: %w", e.GetIno(), err)
	}
	if err := fillUnix(pcp, e, u.queues[e.GetId()]); err != nil {
		unix.Close(pcp)
		closePeer()
		return fmt.Errorf("refill socket:[%d]: %w", e.GetIno(), err)
	}
	// The peer goes with its last fd, cryo's copy, closed here: the
	// kernel releases it now, in this call, and shuts the survivor down.
	if err := closePeer(); err != nil {
		unix.Close(pcp)
		return err
	}
	if err := unix.Close(pcp); err != nil {
		return fmt.Errorf("close the peer of socket:[%d]: %w", e.GetIno(), err)
	}
	if e.GetType() == unix.SOCK_DGRAM {
		// The peer's close leaves a datagram socket as it was: what the
		// program shut down itself is done again.
		if how := e.GetShutdown(); how != 0 {
			if err := unix.Shutdown(cp, int(how)-1); err != nil {
				return fmt.Errorf("socket:[%d]: shutdown: %w", e.GetIno(), err)
			}
		}
	}
	return nil
}

package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// recvTimeout bounds each wait for a datagram of a reply. The kernel
// answers a dump at once; a silent socket means something is wrong, and
// cryo's waits all have a bound.
const recvTimeout = 10 // seconds

// Conn is a NETLINK_SOCK_DIAG socket. It answers about the network
// namespace it was opened in, whichever thread or goroutine uses it. Its
// methods may be called from several goroutines; queries run one at a
// time.
type Conn struct {
	mu  sync.Mutex
	fd  int    // -1 once closed
	seq uint32 // of the last request sent
	buf []byte
	err error // why the Conn is closed
	// record, if set, sees every datagram of every reply: tests capture
	// testdata with it.
	record func([]byte)
}

var errClosed = errors.New("sock_diag connection closed")

// Dial opens a sock_diag socket in the network namespace netns, an open
// namespace file such as /proc/PID/ns/net, or in cryo's own network
// namespace if netns is nil. Joining another namespace needs
// CAP_SYS_ADMIN over it (setns(2)); the error then wraps EPERM.
func Dial(netns *os.File) (*Conn, error) {
	var fd int
	var err error
	if netns == nil {
		fd, err = socket()
	} else {
		fd, err = socketIn(netns)
	}
	if err != nil {
		return nil, err
	}
	tv := unix.Timeval{Sec: recvTimeout}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag socket: SO_RCVTIMEO: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, recvBufSize)}, nil
}

func socket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("sock_diag socket: %w", err)
	}
	return fd, nil
}

// socketIn creates the sock_diag socket inside the network namespace
// netns.
//
// There is no socketat(2): a socket belongs for its whole life to the
// network namespace of the thread that created it, whatever thread uses
// it later (sock_diag answers about sock_net() of the asking socket). So a
// thread joins netns with setns(2), creates the socket, and goes back.
// setns changes the calling thread only, and Go moves goroutines between
// threads, so all of it runs in one goroutine locked to its thread, which
// is unlocked only once it is back home.
//
// If it cannot go back, the goroutine returns still locked: the runtime
// then ends the thread rather than run other goroutines on it
// (runtime.LockOSThread), and never clones it (new threads come from its
// template thread). Going back is not left to that alone because the
// thread may be the process's main thread, which the runtime cannot end
// (it parks it for good, runtime.mexit), and the kernel shows the main
// thread's namespace as the whole process's: /proc/self/net and
// /proc/self/ns/net would name netns from then on.
func socketIn(netns *os.File) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, back, err := socketInLocked(netns)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// socketInLocked does socketIn's work on the locked thread and says
// whether the thread is back in its own namespace.
func socketInLocked(netns *os.File) (fd int, back bool, err error) {
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, true, fmt.Errorf("this thread's network namespace: %w", err)
	}
	defer home.Close()
	if err := setns(netns); err != nil {
		return -1, true, err // still home: setns changes nothing when it fails
	}
	fd, err = socket()
	if berr := setns(home); berr != nil {
		if err == nil {
			unix.Close(fd)
		}
		return -1, false, fmt.Errorf("back from network namespace %s: %w", netns.Name(), berr)
	}
	return fd, true, err
}

// setns moves the calling thread into network namespace ns.
func setns(ns *os.File) error {
	rc, err := ns.SyscallConn()
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", ns.Name(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Setns(int(fd), unix.CLONE_NEWNET) }); err != nil {
		return fmt.Errorf("network namespace %s: %w", ns.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("setns to network namespace %s: %w", ns.Name(), serr)
	}
	return nil
}

// Close closes the socket. It is safe to call more than once.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd, c.err = -1, errClosed
	return err
}

// dump sends a SOCK_DIAG_BY_FAMILY dump request whose body is req and
// hands each socket message of the reply to sock.
//
// A query that fails part way closes the Conn: the kernel keeps the dump
// running on the socket until it is read to its end, and refuses any new
// request there with EBUSY until then. An error the kernel answered with
// ends its reply and leaves the Conn usable.
func (c *Conn) dump(req []byte, sock func(off int64, m []byte) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return c.err
	}
	r := reply{}
	if err := c.dumpLocked(&r, req, sock); err != nil {
		if !r.done {
			unix.Close(c.fd)
			c.fd, c.err = -1, fmt.Errorf("%w after a query failed part way (%w)", errClosed, err)
		}
		return err
	}
	return nil
}

func (c *Conn) dumpLocked(r *reply, req []byte, sock func(off int64, m []byte) error) error {
	c.seq++
	if c.seq == 0 {
		c.seq = 1 // 0 means "any" to reply
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], c.seq)
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	r.seq = c.seq
	for !r.done {
		n, _, flags, from, err := unix.Recvmsg(c.fd, c.buf, nil, 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("sock_diag reply: nothing from the kernel for %d s: %w", recvTimeout, err)
		case err != nil:
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		// Any process may send a datagram to a netlink socket's port
		// id; only the kernel's (port 0) are the answer.
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			return fmt.Errorf("sock_diag reply (byte %d): a datagram larger than %d bytes: %w", r.off, len(c.buf), ErrTooLarge)
		}
		if c.record != nil {
			c.record(c.buf[:n])
		}
		if err := r.feed(c.buf[:n], sock); err != nil {
			return err
		}
	}
	return nil
}

// byInode indexes sockets by inode. Entries without one (inode 0: TCP
// TIME_WAIT and SYN_RECV entries, which are not sockets with a file) are
// left out: no file descriptor can lead to them.
func byInode[T any](s []T, ino func(*T) uint32) map[uint32]*T {
	m := make(map[uint32]*T, len(s))
	for i := range s {
		if n := ino(&s[i]); n != 0 {
			m[n] = &s[i]
		}
	}
	return m
}

// withConn runs f on a Conn dialled in netns and closes it.
func withConn[T any](netns *os.File, f func(*Conn) (T, error)) (T, error) {
	c, err := Dial(netns)
	if err != nil {
		var zero T
		return zero, err
	}
	defer c.Close()
	return f(c)
}

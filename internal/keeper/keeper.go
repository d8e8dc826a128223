// Package keeper holds, from a dump until its restore, the tree's ends of
// pipes whose other end lives on outside the tree — the pipe from `prog`
// to `tee log` in `prog | tee log`, a supervisor's pipe on a program's
// stdout — and its UNIX sockets connected to a peer outside it (a client
// of a local database, of a log collector).
// Were the dumped tree's ends simply closed with the tree, the outside
// process would see EOF (a reader) or EPIPE (a writer) and, as a rule,
// exit; the restored program would then write into a pipe nobody reads.
// A keeper is a small cryo process that holds those ends instead, so the
// outside process only sees a program that pauses, and hands them to the
// restore, which gives them back to the restored tree: the very same pipe,
// with the data that was in it.
//
// A keeper starts before the dumped tree is killed and learns through its
// commit pipe whether the dump completed (Commit): if the pipe closes
// without that, the dump failed or died and the tree runs on, so the
// keeper drops its copies and exits. Once committed it serves claims on an
// abstract UNIX socket named in the image (cryo-meta.json), and exits when
// a restore that claimed the pipes says it is done (the restored tree
// runs), or when no pipe it holds has an outside end left.
//
// # Security
//
// A claim is served only to a peer with the keeper's own uid or root
// (SO_PEERCRED); the restore checks that each file it is handed is the
// pipe the image names, and the end the tree held.
package keeper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
)

// Command is the hidden cryo subcommand a keeper runs as.
const Command = "keep-pipes"

// Pipe is one pipe end to keep, by the image's key for it (pipe:[ID]).
type Pipe struct {
	Key  string
	File *os.File
}

// Keeper is a started keeper, as its dump sees it.
type Keeper struct {
	// Name is the keeper's abstract socket, to record in the image.
	Name   string
	commit *os.File
}

// Guard is a TCP connection of the tree that the dump puts in repair mode
// (TCP_REPAIR), held by the keeper so that a dump that dies before it is
// done cannot leave it so: the program could not take repair mode off
// (it needs CAP_NET_ADMIN), and the connection would be dead. ReuseAddr is
// the program's SO_REUSEADDR, which TCP_REPAIR_OFF clears.
type Guard struct {
	File      *os.File
	Pid       int // the process of the tree that holds it
	ReuseAddr bool
}

// guardKey is a guard's key among the keeper's arguments:
// tcp-guard:PID:R, R 1 for SO_REUSEADDR.
func guardKey(g Guard) string {
	return fmt.Sprintf("tcp-guard:%d:%d", g.Pid, b2i(g.ReuseAddr))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Start runs exe (cryo itself) as a keeper of pipes and guard of TCP
// connections. The keeper gets its own session, so that the dumper's
// terminal and process group signals do not reach it, and is not waited
// for: it may outlive the dump.
func Start(exe string, pipes []Pipe, guards []Guard) (*Keeper, error) {
	var tok [12]byte
	if _, err := unix.Getrandom(tok[:], 0); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("cryo-keeper-%x", tok)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	args := []string{Command, name}
	files := []*os.File{r}
	for _, p := range pipes {
		args = append(args, p.Key)
		files = append(files, p.File)
	}
	for _, g := range guards {
		args = append(args, guardKey(g))
		files = append(files, g.File)
	}
	// Its fd 3 is the commit pipe's read end, 4... the pipes, then the
	// guarded connections.
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start a keeper for %d pipes: %w", len(pipes), err)
	}
	cmd.Process.Release()
	return &Keeper{Name: name, commit: w}, nil
}

// Commit tells the keeper the dump is complete and the tree gone: it
// serves claims from now on.
func (k *Keeper) Commit() error {
	_, err := k.commit.Write([]byte{'C'})
	if cerr := k.commit.Close(); err == nil {
		err = cerr
	}
	return err
}

// Release tells the keeper the tree runs on (--leave-running): its
// connections are out of repair mode; it exits.
func (k *Keeper) Release() error {
	_, err := k.commit.Write([]byte{'R'})
	if cerr := k.commit.Close(); err == nil {
		err = cerr
	}
	return err
}

// Abandon tells the keeper the dump failed: it exits at once, after
// taking repair mode off any connection the dump left in it.
func (k *Keeper) Abandon() { k.commit.Close() }

// Split separates the keeper's files, as its arguments name them, into
// pipes (and sockets) to keep and connections to guard.
func Split(files []Pipe) (pipes []Pipe, guards []Guard) {
	for _, f := range files {
		if rest, ok := strings.CutPrefix(f.Key, "tcp-guard:"); ok {
			var g Guard
			var reuse int
			if _, err := fmt.Sscanf(rest, "%d:%d", &g.Pid, &reuse); err != nil {
				continue
			}
			g.File, g.ReuseAddr = f.File, reuse == 1
			guards = append(guards, g)
			continue
		}
		pipes = append(pipes, f)
	}
	return pipes, guards
}

// unguard takes repair mode off the connections a dump that died left in
// it, and gives back their SO_REUSEADDR; then the network lock of that
// dump, if it is stale, goes (unlock, netlock.Sweep). A connection whose
// process is gone (the dump died while it killed the tree, its image
// complete) stays in repair mode, so that closing it sends nothing: the
// dump's kept lock waits for its restore.
func unguard(guards []Guard, unlock func()) {
	for _, g := range guards {
		if !alive(g.Pid) {
			continue
		}
		fd := int(g.File.Fd())
		if on, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR); err != nil || on == 0 {
			continue
		}
		if unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF) == nil {
			reuse := 0
			if g.ReuseAddr {
				reuse = 1
			}
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, reuse)
		}
	}
	if len(guards) > 0 && unlock != nil {
		// The dump's lock is stale once its dump, the keeper's parent,
		// has exited, which it is doing: its files close before it has.
		parent := os.Getppid()
		for deadline := time.Now().Add(2 * time.Second); os.Getppid() == parent && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		unlock()
	}
}

// alive says whether pid runs (not a zombie, not gone).
func alive(pid int) bool {
	st, err := procfs.StatPid(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// Serve is the keeper process: commit is the commit pipe, pipes the ends
// it keeps, by key, guards the connections it guards, and unlock removes
// the network locks of dumps that died.
func Serve(name string, commit *os.File, pipes []Pipe, guards []Guard, unlock func()) error {
	ls, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ls)
	if err := unix.Bind(ls, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		return fmt.Errorf("keeper %s: bind: %w", name, err)
	}
	if err := unix.Listen(ls, 4); err != nil {
		return err
	}
	var b [1]byte
	n, _ := commit.Read(b[:])
	if n != 1 {
		// The dump failed or died: the tree runs on with its own ends,
		// and its connections must be let go.
		unguard(guards, unlock)
		return nil
	}
	commit.Close()
	for _, g := range guards {
		// Still in repair mode once the tree is killed: the last close
		// of the socket, this one or the dump's, sends nothing.
		g.File.Close()
	}
	if b[0] != 'C' || len(pipes) == 0 {
		return nil
	}
	for {
		// Poll the pipes that still have an outside end too, so that the
		// keeper notices when they are gone: with events 0, poll reports
		// only POLLERR (a write end no one reads) and POLLHUP (a read end
		// no one writes). A pipe whose outside end is gone is still
		// handed to a claim, but no longer keeps the keeper.
		// A read end whose writers are gone still holds what they wrote
		// after the dump, which the image lacks: it keeps the keeper
		// until a restore takes it.
		pfd := []unix.PollFd{{Fd: int32(ls), Events: unix.POLLIN}}
		needed := false
		for _, p := range pipes {
			if HasPeer(p.File) {
				pfd = append(pfd, unix.PollFd{Fd: int32(p.File.Fd())})
				needed = true
			} else if holdsData(p.File) {
				needed = true
			}
		}
		if !needed {
			return nil
		}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		c, _, err := unix.Accept4(ls, unix.SOCK_CLOEXEC)
		if err != nil {
			continue
		}
		if serve(c, pipes) {
			unix.Close(c)
			return nil
		}
		unix.Close(c)
	}
}

// holdsData says whether f holds data for the tree to read: a socket or a
// pipe's read end with bytes unread (FIONREAD). A write end's bytes are
// its outside reader's.
func holdsData(f *os.File) bool {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ) // FIONREAD
	if err != nil || n == 0 {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return true
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY
}

// HasPeer says whether a pipe end has an other end open anywhere: for a
// read end, a writer; for a write end, a reader.
func HasPeer(f *os.File) bool {
	pfd := []unix.PollFd{{Fd: int32(f.Fd())}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return true
	}
	return pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) == 0
}

// serve hands the pipes to one claimant and says whether it took them for
// good: it answers 'D' once its restored tree runs; a claimant that goes
// away without it failed, and the keeper waits for the next.
func serve(c int, pipes []Pipe) (done bool) {
	cred, err := unix.GetsockoptUcred(c, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || (cred.Uid != 0 && int(cred.Uid) != os.Geteuid()) {
		return false
	}
	keys := make([]string, len(pipes))
	fds := make([]int, len(pipes))
	for i, p := range pipes {
		keys[i], fds[i] = p.Key, int(p.File.Fd())
	}
	if err := unix.Sendmsg(c, []byte(strings.Join(keys, "\n")), unix.UnixRights(fds...), nil, 0); err != nil {
		return false
	}
	var b [1]byte
	n, _, err := unix.Recvfrom(c, b[:], 0)
	return err == nil && n == 1 && b[0] == 'D'
}

// Claim is a restore's hold on a keeper's pipes.
type Claim struct {
	// Files are the kept ends, by key.
	Files map[string]*os.File
	conn  int
}

// Take asks the keeper called name for its pipes. An error matching
// ErrGone says there is no such keeper (any more).
func Take(name string) (*Claim, error) {
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(c)
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("keeper %s: %w", name, ErrGone)
		}
		return nil, fmt.Errorf("keeper %s: %w", name, err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*253))
	n, oobn, _, _, err := unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil || n == 0 {
		unix.Close(c)
		return nil, fmt.Errorf("keeper %s handed nothing (not ours to claim?): %w", name, errors.Join(err, ErrGone))
	}
	var fds []int
	if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if r, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	keys := strings.Split(string(buf[:n]), "\n")
	if len(fds) != len(keys) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(c)
		return nil, fmt.Errorf("keeper %s handed %d files for %d pipes", name, len(fds), len(keys))
	}
	cl := &Claim{Files: map[string]*os.File{}, conn: c}
	for i, k := range keys {
		cl.Files[k] = os.NewFile(uintptr(fds[i]), k)
	}
	return cl, nil
}

// ErrGone reports a keeper that is not there.
var ErrGone = errors.New("no such keeper")

// Done tells the keeper the restored tree runs with its pipes: it exits.
// The files stay the caller's to close.
func (c *Claim) Done() {
	unix.Write(c.conn, []byte{'D'})
	unix.Close(c.conn)
}

// Release gives up the claim after a failed restore: the keeper keeps the
// pipes for another one.
func (c *Claim) Release() {
	for _, f := range c.Files {
		f.Close()
	}
	unix.Close(c.conn)
}

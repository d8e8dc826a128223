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

	"golang.org/x/sys/unix"
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

// Start runs exe (cryo itself) as a keeper of pipes. The keeper gets its
// own session, so that the dumper's terminal and process group signals do
// not reach it, and is not waited for: it outlives the dump.
func Start(exe string, pipes []Pipe) (*Keeper, error) {
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
	// Its fd 3 is the commit pipe's read end, 4... the pipes.
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

// Abandon tells the keeper the dump failed: it exits at once.
func (k *Keeper) Abandon() { k.commit.Close() }

// Serve is the keeper process: commit is the commit pipe, pipes the ends
// it keeps, by key.
func Serve(name string, commit *os.File, pipes []Pipe) error {
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
	if n, _ := commit.Read(b[:]); n != 1 || b[0] != 'C' {
		return nil // the dump failed: the tree runs on with its own ends
	}
	commit.Close()
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

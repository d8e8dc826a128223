package dump

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/procfs"
)

// fdEnv is what an fd module gets to dump one fd.
type fdEnv struct {
	p     *process
	fd    int
	path  string // /proc/PID/fd/N
	link  string
	info  *procfs.Fdinfo
	st    *unix.Stat_t
	flags uint32 // file status flags, O_CLOEXEC removed
}

// fdKind is one type of file descriptor cryo can checkpoint: match tells
// whether an fd is of this type, dump records its file and returns its id.
// Adding a type means one file with its dump and one line here (and the
// matching restore module).
type fdKind struct {
	name  string
	match func(link string, st *unix.Stat_t) bool
	dump  func(e *fdEnv) (uint32, error)
}

var fdKinds = []fdKind{
	{"memfd", isMemfd, dumpMemfd},
	{"regular file or directory", isRegOrDir, dumpReg},
	{"device", isSimpleDevice, dumpDevice},
	{"terminal", isTerminal, dumpTerminal},
	{"pipe", isPipe, dumpPipe},
	{"fifo", isFifo, dumpFifo},
	{"eventfd", anon("[eventfd]"), dumpEventfd},
	{"epoll", anon("[eventpoll]"), dumpEpoll},
	{"socket", isSocket, dumpSocket},
	{"signalfd", anon("[signalfd]"), dumpSignalfd},
	{"timerfd", anon("[timerfd]"), dumpTimerfd},
	{"inotify", anon("inotify"), dumpInotify},
	{"pidfd", anon("[pidfd]"), dumpPidfd},
}

func anon(name string) func(string, *unix.Stat_t) bool {
	return func(link string, _ *unix.Stat_t) bool { return link == "anon_inode:"+name }
}

func isRegOrDir(link string, st *unix.Stat_t) bool {
	m := st.Mode & unix.S_IFMT
	return (m == unix.S_IFREG || m == unix.S_IFDIR) && strings.HasPrefix(link, "/")
}

func isMemfd(link string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && strings.HasPrefix(link, "/memfd:")
}

func isSimpleDevice(_ string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && simpleDevices[[2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}]
}

func isTerminal(_ string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && isTTY(st.Rdev)
}

func dumpReg(e *fdEnv) (uint32, error) {
	fe := regEntry(strings.TrimSuffix(e.link, " (deleted)"), e.flags, uint64(e.info.Pos), e.st)
	id := e.p.files.add(fe)
	if e.st.Nlink == 0 && e.st.Mode&unix.S_IFMT == unix.S_IFREG {
		f, err := os.Open(e.path)
		if err != nil {
			return 0, fmt.Errorf("open deleted file: %w", err)
		}
		e.p.closers = append(e.p.closers, f)
		e.p.files.addGhost(id, f, e.st)
	}
	return id, nil
}

func dumpDevice(e *fdEnv) (uint32, error) {
	return e.p.files.add(regEntry(e.link, e.flags, uint64(e.info.Pos), e.st)), nil
}

func dumpTerminal(e *fdEnv) (uint32, error) {
	if !e.p.opts.ShellJob {
		return 0, fmt.Errorf("a terminal: dump with --shell-job to re-attach it to the terminal of cryo restore: %w", ErrNotSupported)
	}
	fe := regEntry(e.link, e.flags, 0, e.st)
	fe.Type = fdinfo.FdTypes_TTY.Enum()
	return e.p.files.add(fe), nil
}

package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/errs"
)

// Terminals, with --shell-job only: the restored job's terminal fds are
// opened on the terminal of `cryo restore` itself, as criu does. Without
// the flag a terminal is refused by name, at dump and at restore.
var ttyKind = Kind{
	Name:    "terminal",
	Type:    fdinfo.FdTypes_TTY,
	Dump:    func() dumper { return ttyDump{} },
	Restore: func() opener { return ttyOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		r := f.GetReg()
		return Description{Path: r.GetName(), HasFlags: true, Flags: r.GetFlags(), Pos: r.GetPos()}
	},
}

// isTTY says whether rdev is a terminal: /dev/tty (5), the console and
// virtual terminals (4), pseudo-terminal slaves (136-143).
func isTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

type ttyDump struct{}

func (ttyDump) match(fd *Fd) bool {
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFCHR && isTTY(fd.Stat.Rdev)
}

func (ttyDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	if unix.Major(fd.Stat.Rdev) == 5 && unix.Minor(fd.Stat.Rdev) == 2 {
		// /dev/ptmx: the master of a pseudo-terminal pair, held inside
		// the tree (a terminal emulator, tmux, sshd). --shell-job would
		// make it a slave of restore's terminal.
		return 0, fmt.Errorf("the master side of a pseudo-terminal (%s): pty pairs inside the tree are not restored yet: %w", ptyIndex(fd), errs.ErrNotSupported)
	}
	if !d.opts.ShellJob {
		return 0, fmt.Errorf("a terminal: dump with --shell-job to re-attach it to the terminal of cryo restore: %w", errs.ErrNotSupported)
	}
	e := regEntry(fd.Link, fd.Flags, 0, fd.Stat)
	e.Type = fdinfo.FdTypes_TTY.Enum()
	return d.Add(e), nil
}

// ptyIndex names the slave of a pty master fd, from fdinfo's tty-index.
func ptyIndex(fd *Fd) string {
	for _, kv := range fd.Info.Extra {
		if kv.Key == "tty-index" {
			return "its slave is /dev/pts/" + kv.Value
		}
	}
	return "its slave unknown"
}

type ttyOpen struct{}

func (ttyOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	if !r.opts.ShellJob {
		return 0, fmt.Errorf("a terminal (%s): restore with --shell-job to attach it to this terminal: %w", f.GetReg().GetName(), errs.ErrNotSupported)
	}
	tty, err := ttyPath()
	if err != nil {
		return 0, err
	}
	s, err := p.Str(tty)
	if err != nil {
		return 0, err
	}
	return p.Call("open "+tty, unix.SYS_OPENAT, atFdcwd, s, uint64(f.GetReg().GetFlags()|unix.O_CLOEXEC|unix.O_NOCTTY), 0)
}

// ttyPath is the terminal of cryo itself, for --shell-job.
func ttyPath() (string, error) {
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		}
	}
	return "", errors.New("--shell-job: cryo restore has no terminal on stdin, stdout or stderr")
}
